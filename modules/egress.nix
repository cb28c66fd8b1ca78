# The sandboxes' egress (SECURITY.md, docs/sandboxes.md): the nftables
# tables and the squid configuration `appliance generate` writes for each
# host, and the resolver on the sandboxes' bridge. Rust decides every rule
# from the spec; this module only hands the files to nixpkgs' nftables,
# squid and dnsmasq services. The generated host module sets the options.
{ config, lib, ... }:
let
  inherit (import ./lib.nix lib) strings;
  cfg = config.appliance.egress;
  hasProxy = cfg.proxyConfig != null;
  hasResolver = cfg.resolver != null;
in
{
  options.appliance.egress = {
    enable = lib.mkEnableOption ''
      the sandboxes' egress firewall: the generated nftables tables
      `inet appliance_egress` and `bridge appliance_bridge`'';

    inetTable = lib.mkOption {
      type = lib.types.path;
      description = "Body of the `inet appliance_egress` table (generated/hosts/<host>/firewall-inet.nft).";
    };

    bridgeTable = lib.mkOption {
      type = lib.types.path;
      description = "Body of the `bridge appliance_bridge` table (generated/hosts/<host>/firewall-bridge.nft).";
    };

    proxyConfig = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = ''
        squid's configuration (generated/hosts/<host>/egress-proxy.conf), when a
        sandbox of this host reaches the web or named hosts; null: no proxy.
      '';
    };

    grantFiles = strings {
      example = [ "/var/lib/appliance/egress-grants/balthasar" ];
      description = ''
        The files of host names the admins granted a sandbox for a while
        (`!allow`, docs/warden.md), which the proxy configuration names: one
        per sandbox, written by the warden. They are made empty (0644, in a
        0755 directory: squid reads them as its own user when it
        reconfigures) before the proxy starts, and never truncated.
      '';
    };

    resolver = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "10.88.0.1";
      description = ''
        The bridge address dnsmasq answers the sandboxes on, when one of them
        may resolve names (`egress = "web"`); null: no resolver.
      '';
    };

    networkUnit = lib.mkOption {
      type = lib.types.str;
      default = "appliance-network.service";
      description = "The unit that creates the sandboxes' bridge: the proxy and the resolver listen on it.";
    };
  };

  config = {
    networking.nftables = lib.mkIf cfg.enable {
      enable = true;
      # Only our tables: the host's own rules stay.
      flushRuleset = false;
      tables.appliance_egress = {
        family = "inet";
        content = builtins.readFile cfg.inetTable;
      };
      tables.appliance_bridge = {
        family = "bridge";
        content = builtins.readFile cfg.bridgeTable;
      };
      # The inet table holds squid's own connections by its user; the build
      # checks the ruleset where that user does not exist, so `nobody`
      # stands in for it there (the loaded ruleset names squid).
      preCheckRuleset = lib.mkIf hasProxy "sed -i 's/meta skuid \"squid\"/meta skuid \"nobody\"/' ruleset.conf";
    };

    services.squid = lib.mkIf (cfg.enable && hasProxy) {
      enable = true;
      configText = builtins.readFile cfg.proxyConfig;
    };

    # gVisor's netstack cannot reach Docker's embedded resolver on a
    # user-defined network: each networked sandbox's resolv.conf names this
    # one, which forwards to the host's resolvers. The egress table lets
    # only the sandboxes with `egress = "web"` reach it (a name query is a
    # way out, which only they already have through the proxy).
    services.dnsmasq = lib.mkIf hasResolver {
      enable = true;
      resolveLocalQueries = false;
      settings = {
        listen-address = [ cfg.resolver ];
        bind-dynamic = true;
        no-hosts = true;
      };
    };

    # `f` makes a missing file and leaves an existing one (and its grants)
    # as it is; systemd-tmpfiles-setup runs before any service starts.
    systemd.tmpfiles.rules = lib.mkIf (cfg.enable && hasProxy) (
      lib.unique (map (file: "d ${dirOf file} 0755 root root -") cfg.grantFiles)
      ++ map (file: "f ${file} 0644 root root -") cfg.grantFiles
    );

    systemd.services.squid = lib.mkIf (cfg.enable && hasProxy) {
      after = [ cfg.networkUnit ];
      wants = [ cfg.networkUnit ];
    };
    systemd.services.dnsmasq = lib.mkIf hasResolver {
      after = [ cfg.networkUnit ];
      wants = [ cfg.networkUnit ];
    };
  };
}
