# The sandboxes' egress (SECURITY.md, docs/sandboxes.md): the nftables
# tables and the squid configuration `appliance generate` writes for each
# host, and the resolver on the sandboxes' bridge. Rust decides every rule
# from the spec; this module only hands the files to nixpkgs' nftables,
# squid and dnsmasq services. The host's generated values
# (generated/hosts/<host>/options.json, read by nix/generated.nix) set the
# options.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (import ./lib.nix lib) strings secretsOneshot;
  cfg = config.appliance.egress;
  hasProxy = cfg.proxyConfig != null;
  hasResolver = cfg.resolver != null;
  hasCredentials = cfg.enable && hasProxy && cfg.credentials != { };
  squidPackage = config.services.squid.package;

  # Where src/generator/model/credentials.rs puts them (the generated configuration
  # names the same paths).
  caDir = "/var/lib/appliance/egress-ca";
  # The proxy's own directory (0750 root:squid): the CA key and the
  # credentials' include files. Not under secrets/, where every agent's
  # directory is named after the agent.
  proxyDir = "/var/lib/appliance/egress-proxy";
  sslDb = "/var/cache/squid/ssl_db";

  # The body of one generated nftables table, by family.
  tableBody =
    family: name:
    lib.mkOption {
      type = lib.types.path;
      description = "Body of the `${family} ${name}` table (generated/hosts/<host>/firewall-${family}.nft).";
    };

  # The line a credential's include file has on one side of the token.
  credentialLine =
    side:
    lib.mkOption {
      type = lib.types.str;
      description = "The proxy configuration line ${side} the credential.";
    };

  # The appliance CA, made once on this host (a key and certificate that
  # are there are kept): the key 0440 root:squid in a 0750 directory (the
  # proxy signs with it), the certificate 0444 beside its OpenSSL hash link
  # (the sandboxes with a credential bind that directory). Written beside
  # their final names and renamed, as appliance-service-secrets does.
  makeCa = ''
    mkdir -p -m 0755 ${caDir}
    mkdir -p -m 0750 ${proxyDir}
    chgrp squid ${proxyDir}
    if [ ! -s ${proxyDir}/ca.key ] || [ ! -s ${caDir}/ca.pem ]; then
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ${proxyDir}/ca.key.tmp -out ${caDir}/ca.pem.tmp -days 3650 \
        -subj "/CN=agent-appliance egress CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
      chgrp squid ${proxyDir}/ca.key.tmp
      chmod 0440 ${proxyDir}/ca.key.tmp
      chmod 0444 ${caDir}/ca.pem.tmp
      mv ${proxyDir}/ca.key.tmp ${proxyDir}/ca.key
      mv ${caDir}/ca.pem.tmp ${caDir}/ca.pem
    fi
    ln -sfn ca.pem "${caDir}/$(openssl x509 -hash -noout -in ${caDir}/ca.pem).0"
  '';

  # One include file of the proxy: the line the generated configuration
  # wants around the real token, read from the operator's file at each
  # start of the proxy. A token of anything but letters, digits and `_`
  # (what GitHub's are) is refused, so nothing but the token reaches
  # squid's configuration; without one, the placeholder is only removed.
  writeCredential =
    file: credential:
    let
      target = lib.escapeShellArg file;
      tmp = lib.escapeShellArg "${file}.tmp";
      tokenFile = lib.escapeShellArg credential.tokenFile;
    in
    ''
      token=""
      if [ -r ${tokenFile} ]; then token="$(tr -d '[:space:]' < ${tokenFile})"; fi
      case "$token" in
        "")
          echo "appliance: no credential in "${tokenFile}"; the proxy adds none" >&2
          line="# no credential in the token file"
          ;;
        *[!A-Za-z0-9_]*)
          echo "appliance: the credential in "${tokenFile}" has characters other than letters, digits and _; the proxy adds none" >&2
          line="# the token file's credential was refused"
          ;;
        *)
          line=${lib.escapeShellArg credential.before}"$token"${lib.escapeShellArg credential.after}
          ;;
      esac
      printf '%s\n' "$line" > ${tmp}
      chgrp squid ${tmp}
      chmod 0440 ${tmp}
      mv ${tmp} ${target}
    '';
in
{
  options.appliance.egress = {
    enable = lib.mkEnableOption ''
      the sandboxes' egress firewall: the generated nftables tables
      `inet appliance_egress` and `bridge appliance_bridge`'';

    inetTable = tableBody "inet" "appliance_egress";
    bridgeTable = tableBody "bridge" "appliance_bridge";

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

    credentials = lib.mkOption {
      type = lib.types.attrsOf (
        lib.types.submodule {
          options = {
            tokenFile = lib.mkOption {
              type = lib.types.strMatching "/[A-Za-z0-9._/-]+";
              example = "/var/lib/appliance/credentials/github-token";
              description = "The operator's file on this host holding the real credential.";
            };
            before = credentialLine "before";
            after = credentialLine "after";
          };
        }
      );
      default = { };
      description = ''
        The credentials the proxy adds for the sandboxes (SECURITY.md,
        "Credentials at the proxy"), by the include file the generated
        configuration names (under ${proxyDir}, 0440 root:squid), which
        the proxy's unit writes at each start from `tokenFile`. Not empty:
        the appliance CA is made at first boot (`appliance-egress-ca`) and
        squid's certificate database is made before squid starts.
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

    # nixpkgs' squid is built --with-openssl --enable-ssl-crtd: the
    # certificate generator the configuration names is in the package.
    services.squid = lib.mkIf (cfg.enable && hasProxy) {
      enable = true;
      configText =
        builtins.replaceStrings [ "@SECURITY_FILE_CERTGEN@" ] [ "${squidPackage}/libexec/security_file_certgen" ]
          (builtins.readFile cfg.proxyConfig);
    };

    systemd.services.appliance-egress-ca = lib.mkIf hasCredentials {
      description = "Create the appliance CA of the egress proxy on first boot";
      path = [
        pkgs.coreutils
        pkgs.openssl
      ];
      serviceConfig = secretsOneshot;
      script = makeCa;
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
      after = [ cfg.networkUnit ] ++ lib.optional hasCredentials "appliance-egress-ca.service";
      wants = [ cfg.networkUnit ];
      requires = lib.optional hasCredentials "appliance-egress-ca.service";
      # Before squid reads its configuration: the certificate database and
      # the credentials' include files (the token files may have changed).
      # `mkBefore`: nixpkgs' own preStart runs `squid -z -f <conf>`, which
      # stops on an `include` whose file is missing (a fresh host).
      preStart = lib.mkIf hasCredentials (
        lib.mkBefore (
          ''
            if [ ! -d ${sslDb} ]; then
              mkdir -p ${dirOf sslDb}
              ${squidPackage}/libexec/security_file_certgen -c -s ${sslDb} -M 4MB
              chown -R squid:squid ${sslDb}
            fi
            mkdir -p -m 0750 ${proxyDir}
            chgrp squid ${proxyDir}
          ''
          + lib.concatStrings (lib.mapAttrsToList writeCredential cfg.credentials)
        )
      );
    };
    systemd.services.dnsmasq = lib.mkIf hasResolver {
      after = [ cfg.networkUnit ];
      wants = [ cfg.networkUnit ];
    };
  };
}
