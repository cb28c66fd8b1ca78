# Docker with the gVisor runtimes, and the one bridge every sandbox joins
# (docs/sandboxes.md, SECURITY.md). Rust decides the runtimes (one strict
# runsc for every sandbox, the permissive flags only on the runtimes that
# need them: src/generator/render/runtimes.rs writes docker-daemon.json) and
# the bridge's addresses (src/generator/render/host.rs); the host's
# generated values (generated/hosts/<host>/options.json, read by
# nix/generated.nix) set these options, and this module maps them onto
# nixpkgs' Docker and a oneshot that creates the network once.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.appliance.docker;
  inherit (import ./lib.nix lib)
    ipv4
    ipv4Prefix
    interfaceName
    generatedFile
    ;
  net = cfg.network;

  # The daemon settings as generated, each runtime pointed at this
  # nixpkgs' runsc (the file names no store path).
  settings = lib.importJSON cfg.daemonSettings;
  runsc = lib.getExe' pkgs.gvisor "runsc";

  # `docker network create`, as `render::network_create` spells it for the
  # tests that run it on a real dockerd (tests/egress.rs, the rehearsal).
  create = [
    "docker"
    "network"
    "create"
    "--driver=bridge"
    "--subnet=${net.subnet}"
    "--gateway=${net.gateway}"
    "--opt=com.docker.network.bridge.name=${net.bridge}"
  ]
  ++ lib.optional (net.mtu != null) "--opt=com.docker.network.driver.mtu=${toString net.mtu}"
  ++ [ net.name ];
in
{
  options.appliance.docker = {
    enable = lib.mkEnableOption ''
      Docker with the appliance's gVisor (runsc) runtimes, strict by default,
      and the sandboxes' bridge (`appliance-network.service`)'';

    daemonSettings = generatedFile "docker-daemon.json" ''
      Docker's daemon settings (generated/hosts/<host>/docker-daemon.json):
      `default-runtime` and one runsc runtime per profile the host's
      sandboxes use. Each runtime's `path` is replaced by this nixpkgs'
      runsc.
    '';

    runscMinimum = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      # The same on every host: pinned with gVisor (`RUNSC_MINIMUM` in
      # Rust, which `appliance doctor` checks, is read from the same file).
      default = (lib.importJSON ../nix/sources.json).gvisor.minimum;
      defaultText = lib.literalExpression "(lib.importJSON ../nix/sources.json).gvisor.minimum";
      example = "20260316.0";
      description = ''
        The oldest gVisor release this host may run (`pkgs.gvisor.version`),
        asserted at evaluation; null: no check.
      '';
    };

    network = {
      name = lib.mkOption {
        # Docker's own rule for network names.
        type = lib.types.strMatching "[a-zA-Z0-9][a-zA-Z0-9_.-]*";
        example = "appliance";
        description = ''
          The Docker network every sandbox joins; the sandboxes' `--network=`
          (generated) names it, so it changes only with them.
        '';
      };

      subnet = lib.mkOption {
        type = ipv4Prefix;
        example = "10.88.0.0/16";
        description = "The network's IPv4 subnet; the sandboxes have fixed addresses in it.";
      };

      gateway = lib.mkOption {
        type = ipv4;
        example = "10.88.0.1";
        description = ''
          The host's address on the bridge, where the sandboxes reach the
          host's services (the resolver, the egress proxy, Synapse).
        '';
      };

      bridge = lib.mkOption {
        type = interfaceName;
        example = "br-appliance";
        description = ''
          The bridge's interface on the host; the firewall and the egress
          tables (generated) match it, so it changes only with them.
        '';
      };

      mtu = lib.mkOption {
        type = lib.types.nullOr lib.types.ints.positive;
        default = null;
        example = 1460;
        description = "The bridge's MTU; `null` keeps Docker's (1500). GCE's network carries 1460.";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = lib.optional (cfg.runscMinimum != null) {
      # Older runsc panics on the 39-bit address space of Raspberry Pi
      # kernels; the flake's overlay builds a newer release when needed.
      assertion = lib.versionAtLeast pkgs.gvisor.version cfg.runscMinimum;
      message = "appliance host `${config.appliance.host}`: gVisor ${pkgs.gvisor.version} is older than release-${cfg.runscMinimum}; use the flake's overlay (nix/overlay.nix) or pin a newer gvisor.";
    };

    virtualisation.docker = {
      enable = true;
      daemon.settings = settings // {
        runtimes = lib.mapAttrs (_name: runtime: runtime // { path = runsc; }) settings.runtimes;
      };
    };

    # One bridge for the sandboxes, addressed by fixed IPs: gVisor's netstack
    # cannot use Docker's embedded DNS on user-defined networks. Made once:
    # a network that exists is kept (with its sandboxes attached).
    systemd.services.appliance-network = {
      description = "Docker network for the appliance sandboxes";
      after = [ "docker.service" ];
      requires = [ "docker.service" ];
      wantedBy = [ "multi-user.target" ];
      path = [ config.virtualisation.docker.package ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script =
        lib.escapeShellArgs [
          "docker"
          "network"
          "inspect"
          net.name
        ]
        + " >/dev/null 2>&1 || "
        + lib.escapeShellArgs create;
    };
  };
}
