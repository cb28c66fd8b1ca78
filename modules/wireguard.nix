# The overlay between the appliance's hosts (docs/pairing.md): one WireGuard
# interface per host, its private key made on the machine at first boot and
# never leaving it, each other host a peer once the spec has its public key.
# Rust decides the interface, the addresses, the port, the key's path, the
# peers (with their endpoints and keepalive), which hosts are still unpaired
# and whether this host binds the overlay address non-locally
# (src/generator/render/host.rs); the host's generated values
# (generated/hosts/<host>/options.json, read by nix/generated.nix) set these
# options, and this module maps them onto nixpkgs' `networking.wireguard`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (import ./lib.nix lib)
    strings
    ipv4Prefix
    interfaceName
    conditionPath
    ;
  cfg = config.appliance.wireguard;
  useNetworkd = config.networking.wireguard.useNetworkd;
  keyFile = lib.escapeShellArg cfg.keyFile;
  keyTmp = lib.escapeShellArg "${cfg.keyFile}.tmp";
in
{
  options.appliance.wireguard = {
    enable = lib.mkEnableOption ''
      the appliance's WireGuard overlay between its hosts, with a private
      key made on this machine at first boot'';

    interface = lib.mkOption {
      type = interfaceName;
      example = "wg-appliance";
      description = ''
        The overlay's interface; the firewall (generated) and the units that
        wait for its address name it, so it changes only with them.
      '';
    };

    address = lib.mkOption {
      type = ipv4Prefix;
      example = "10.89.0.1/24";
      description = "This host's overlay address, with the overlay's prefix.";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 51820;
      description = "The UDP port WireGuard listens on; the generated firewall opens it.";
    };

    keyFile = lib.mkOption {
      type = conditionPath;
      example = "/var/lib/appliance/wireguard/private.key";
      description = ''
        This host's private key, made at first boot when missing (its
        directory 0700); pairing (docs/pairing.md) proves this host's
        identity with it.
      '';
    };

    peers = lib.mkOption {
      type = lib.types.listOf (
        lib.types.submodule {
          options = {
            publicKey = lib.mkOption {
              # A WireGuard key as the spec's check takes it: 44 base64 characters.
              type = lib.types.strMatching "[A-Za-z0-9+/]{43}=";
              description = "The peer's public key (`wireguard-public-key` of its host in appliance.toml).";
            };
            allowedIPs = lib.mkOption {
              type = lib.types.listOf lib.types.str;
              example = [ "10.89.0.2/32" ];
              description = "The peer's overlay address: what it may send from and what is routed to it.";
            };
            endpoint = lib.mkOption {
              type = lib.types.nullOr lib.types.str;
              default = null;
              example = "hub.example.org:51820";
              description = "Where to dial the peer (`host:port`); null: it dials in.";
            };
            persistentKeepalive = lib.mkOption {
              type = lib.types.nullOr lib.types.ints.positive;
              default = null;
              example = 25;
              description = "Seconds between keepalives to a dialled peer, through NAT; null: none.";
            };
          };
        }
      );
      default = [ ];
      description = "The other hosts whose public key the spec has.";
    };

    unpaired = strings {
      example = [ "pi" ];
      description = ''
        Other hosts whose public key the spec lacks, so the link to them is
        down: each is a warning at evaluation, naming how to pair them.
      '';
    };

    nonlocalBind = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Let services bind addresses the host does not have (yet)
        (`net.ipv4.ip_nonlocal_bind`): on the Matrix host Synapse and nginx
        listen on the overlay address too, and start after WireGuard
        without needing it.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    # nixpkgs' scripted backend makes the key itself
    # (`generatePrivateKeyFile`); its networkd backend cannot, and reads the
    # key when systemd-networkd starts, so with networkd this unit makes it
    # before that.
    systemd.services.appliance-wireguard-key = lib.mkIf useNetworkd {
      description = "Create this host's WireGuard private key on first boot";
      before = [ "systemd-networkd.service" ];
      wantedBy = [ "systemd-networkd.service" ];
      after = [ "local-fs.target" ];
      path = [
        pkgs.wireguard-tools
        pkgs.coreutils
      ];
      unitConfig = {
        DefaultDependencies = false;
        ConditionPathExists = "!${cfg.keyFile}";
      };
      serviceConfig = {
        Type = "oneshot";
        UMask = "0077";
      };
      # It may run before systemd-tmpfiles has made the directory. Written
      # beside its final name and renamed, so a reader never sees half a
      # key; every value reaches the shell through `lib.escapeShellArg`.
      script = ''
        mkdir -p -m 0700 ${lib.escapeShellArg (builtins.dirOf cfg.keyFile)}
        wg genkey > ${keyTmp}
        mv ${keyTmp} ${keyFile}
        echo ${lib.escapeShellArg "WireGuard public key of ${config.appliance.host}:"} "$(wg pubkey < ${keyFile})"
      '';
    };

    # `optionalAttrs`, not only the `mkIf` above: the module system reads
    # the names of an `mkIf`'s attribute set before its condition, and the
    # interface's name has no default on a host without the overlay.
    networking.wireguard.interfaces = lib.optionalAttrs cfg.enable {
      ${cfg.interface} = {
        ips = [ cfg.address ];
        listenPort = cfg.port;
        privateKeyFile = cfg.keyFile;
        generatePrivateKeyFile = !useNetworkd;
        peers = map (peer: {
          inherit (peer)
            publicKey
            allowedIPs
            endpoint
            persistentKeepalive
            ;
        }) cfg.peers;
      };
    };

    # Synapse and nginx listen on loopback, the bridge and this overlay
    # address, and start after WireGuard without needing it: binding an
    # address the host does not have (yet) keeps Matrix up on this host when
    # WireGuard fails. It grants no reach: routes and the firewall decide.
    boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind" = lib.mkIf cfg.nonlocalBind 1;

    warnings = map (
      host:
      "appliance host `${config.appliance.host}`: host `${host}` has no `wireguard-public-key` in appliance.toml, so the link to it is down; pair them (docs/pairing.md)."
    ) cfg.unpaired;
  };
}
