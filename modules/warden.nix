# The warden (docs/warden.md): `appliance warden` as a systemd service on
# the Matrix host. It runs as root, outside every sandbox: it reads the
# appliance account's root-only token, holds the rooms' top power level to
# mute agents at the homeserver, and keeps the hash-chained audit trail.
# It runs wherever the bootstrap does (the host with Synapse), with its
# plan; a host can turn it off (`appliance.warden.enable = false;`) or add
# arguments.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (import ./lib.nix lib) strings execAppliance;
  cfg = config.appliance.warden;
in
{
  options.appliance.warden = {
    enable = lib.mkEnableOption ''
      the warden: `!status`, `!halt` and `!resume` from the spec's admins, a
      loop breaker the agents cannot ignore, and an append-only audit trail
      (docs/warden.md)''
    // {
      default = config.appliance.bootstrap.enable;
      defaultText = lib.literalExpression "config.appliance.bootstrap.enable";
    };

    package = lib.mkPackageOption pkgs "agent-appliance" { };

    plan = lib.mkOption {
      type = lib.types.path;
      default = config.appliance.bootstrap.plan;
      defaultText = lib.literalExpression "config.appliance.bootstrap.plan";
      description = ''
        The bootstrap plan the warden reads (generated/bootstrap/plan.json):
        the admins it obeys, the agents it may mute, the rooms, the ops room
        and the state directory. By default the one bootstrap runs.
      '';
    };

    extraArgs = strings {
      example = [
        "--homeserver"
        "http://127.0.0.1:8008"
      ];
      description = "More arguments to `appliance warden` (see `appliance warden --help`).";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.appliance-warden = {
      description = "The appliance's warden: halts, loop breaker and audit trail, outside every sandbox";
      # It needs the rooms and the account bootstrap makes; without them it
      # has nothing to watch. Synapse restarting makes it fail and restart.
      after = [
        "matrix-synapse.service"
        "appliance-bootstrap.service"
      ];
      requires = [ "appliance-bootstrap.service" ];
      wants = [ "matrix-synapse.service" ];
      wantedBy = [ "multi-user.target" ];
      # The docker CLI reports the sandboxes' health (`--docker`, default
      # `docker` from PATH), over the host's Docker socket.
      # `systemctl reload squid.service` (`--proxy-reload`) makes the proxy
      # read the grant files again (nixpkgs' squid unit: SIGHUP).
      path = [
        config.virtualisation.docker.package
        config.systemd.package
      ];
      serviceConfig = {
        ExecStart = execAppliance utils cfg.package (
          [
            "warden"
            "--plan"
            "${cfg.plan}"
          ]
          ++ cfg.extraArgs
        );
        Restart = "on-failure";
        RestartSec = 5;
        # Its own files: the /sync position, the mutes, the audit trail
        # (/var/lib/appliance/warden, the plan's state directory), 0700.
        StateDirectory = "appliance/warden";
        StateDirectoryMode = "0700";
        UMask = "0077";
        # Root for the token (0400 root) and, for health notices, Docker;
        # nothing else of the host is writable to it but the proxy's grant
        # files (docs/warden.md, "Egress grants"), which it replaces
        # (a new file renamed over the old, in their directory), and the
        # approval brokers' sockets (docs/warden.md, "Code execution
        # approvals"), one directory per code sandbox that tmpfiles makes
        # (`-`: a host without code execution has none).
        ReadWritePaths = lib.unique (map dirOf config.appliance.egress.grantFiles) ++ [
          "-/run/appliance/approval"
        ];
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        NoNewPrivileges = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        RestrictSUIDSGID = true;
      };
    };
  };
}
