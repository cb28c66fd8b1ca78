# The Matrix host's first boot (docs/bootstrap.md): `appliance bootstrap`
# makes the secrets before Synapse starts (`appliance-secrets.service`),
# then the accounts, rooms and agent tokens once Synapse is up
# (`appliance-bootstrap.service`). Both are idempotent and rerun at every
# boot. The plan (generated/bootstrap/plan.json) names every account, room
# and secret file, never a secret value; it is installed as
# /etc/appliance/bootstrap-plan.json, with the `appliance` command, for the
# admins' `appliance admin password`. The values of the host with Synapse
# (generated/hosts/<host>/options.json, read by nix/generated.nix) set
# `enable` and `plan`.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.appliance.bootstrap;
  inherit (import ./lib.nix lib) execAppliance secretsOneshot;
  # Where `appliance admin password` and the warden look by default (src/operator/cli.rs).
  planFile = "appliance/bootstrap-plan.json";
  bootstrap =
    extra:
    execAppliance utils cfg.package (
      [
        "bootstrap"
        "--plan"
        "${cfg.plan}"
      ]
      ++ extra
    );
in
{
  options.appliance.bootstrap = {
    enable = lib.mkEnableOption ''
      the Matrix host's bootstrap: secrets on first boot, then the Matrix
      accounts, rooms and agent tokens of the plan'';

    package = lib.mkPackageOption pkgs "agent-appliance" { };

    plan = lib.mkOption {
      type = lib.types.path;
      description = "The bootstrap plan (generated/bootstrap/plan.json); the warden reads the same one.";
    };
  };

  config = lib.mkIf cfg.enable {
    # `appliance admin password ADMIN` (root only; it also reads the master
    # key) and the warden read the plan from here by default.
    environment.etc.${planFile}.source = cfg.plan;
    environment.systemPackages = [ cfg.package ];

    # Secrets exist only on this host, created at first boot, never in the store.
    systemd.services.appliance-secrets = {
      description = "Create the appliance's secrets on first boot";
      before = [ "matrix-synapse.service" ];
      serviceConfig = secretsOneshot // {
        ExecStart = bootstrap [ "--secrets-only" ];
      };
    };
    systemd.services.appliance-bootstrap = {
      description = "Create the appliance's Matrix accounts, rooms and agent tokens";
      after = [ "matrix-synapse.service" ];
      requires = [ "matrix-synapse.service" ];
      wantedBy = [ "multi-user.target" ];
      serviceConfig = secretsOneshot // {
        ExecStart = bootstrap [ ];
      };
    };
  };
}
