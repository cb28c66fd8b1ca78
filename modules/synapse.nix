# Synapse, the appliance's Matrix homeserver (docs/bootstrap.md,
# SECURITY.md): registration closed (accounts come from `appliance
# bootstrap` through the shared secret), no federation unless the spec asks,
# listening on loopback, the sandboxes' bridge and the overlay only. Rust
# decides the settings (src/generator/render/synapse.rs writes
# synapse.json), the database, the units Synapse waits for and the addresses
# it may talk with (src/generator/render/host.rs); the host's generated
# values (generated/hosts/<host>/options.json, read by nix/generated.nix)
# set these options on the Matrix host, and this module maps them onto
# nixpkgs' Synapse and PostgreSQL.
{
  config,
  lib,
  ...
}:
let
  cfg = config.appliance.synapse;
  inherit (import ./lib.nix lib) units generatedFile;
in
{
  options.appliance.synapse = {
    enable = lib.mkEnableOption ''
      Synapse (`services.matrix-synapse`) with the generated settings, the
      appliance's homeserver'';

    settingsFile = generatedFile "synapse.json" ''
      Synapse's settings as generated (generated/hosts/<host>/synapse.json):
      listeners, database, registration and federation; read into
      `services.matrix-synapse.settings`.
    '';

    postgresql = {
      enable = lib.mkEnableOption ''
        a local PostgreSQL for Synapse: a C-locale cluster, one role and one
        database, reached on the local socket only'';

      name = lib.mkOption {
        # A PostgreSQL identifier nixpkgs quotes; no quote of its own.
        type = lib.types.strMatching "[A-Za-z0-9_-]+";
        default = "matrix-synapse";
        description = ''
          The role and the database, named as Synapse's system user so that
          peer authentication on the local socket maps one to the other: no
          password exists. synapse.json's `database.args` names the same.
        '';
      };
    };

    after = units "Units Synapse starts after (the bridge, its secrets, the overlay's address).";
    requires = units "Units Synapse needs (the bridge, its secrets; not the overlay, which it binds non-locally).";
    wants = units "Units Synapse pulls in without needing them (`network-online.target` with an overlay).";

    allowedAddresses = lib.mkOption {
      type = lib.types.nullOr (lib.types.listOf lib.types.str);
      default = null;
      example = [
        "localhost"
        "10.88.0.0/16"
      ];
      description = ''
        The only addresses the unit may exchange packets with (systemd
        `IPAddressAllow`, with `IPAddressDeny = any`): without federation
        Synapse talks only with its clients. `null`: no filter (federation,
        where other homeservers are anywhere).
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    services.matrix-synapse = {
      enable = true;
      settings = lib.importJSON cfg.settingsFile;
    };

    # Synapse's database (nixos/modules/services/matrix/synapse.md): a role
    # and a database named as Synapse's system user, reached on the local
    # socket with peer authentication (the system user is the role), so no
    # password exists. nixpkgs' Synapse module orders Synapse after it.
    # Synapse refuses a database whose collation is not C, and
    # `ensureDatabases` creates it with the cluster's locale: the cluster is
    # made with C. No TCP listener: nothing but the socket is needed.
    services.postgresql = lib.mkIf cfg.postgresql.enable {
      enable = true;
      initdbArgs = [
        "--locale=C"
        "--encoding=UTF8"
      ];
      ensureDatabases = [ cfg.postgresql.name ];
      ensureUsers = [
        {
          name = cfg.postgresql.name;
          ensureDBOwnership = true;
        }
      ];
      settings.listen_addresses = lib.mkForce "";
    };

    systemd.services.matrix-synapse = {
      inherit (cfg) after requires wants;
      serviceConfig = lib.mkIf (cfg.allowedAddresses != null) {
        IPAddressDeny = "any";
        IPAddressAllow = cfg.allowedAddresses;
      };
    };
  };
}
