# Backups of the Matrix host (docs/backup.md): nixpkgs' restic module, one
# job, `services.restic.backups.appliance`. Rust decides what is backed up
# and where it lives (src/generator/render/backup.rs writes backup.json, which
# `appliance backup prepare` reads); this module maps the spec's
# repository, schedule and retention onto the restic job, runs `appliance
# backup prepare` before `restic backup` of the staging directory and
# `appliance backup cleanup` after it, whatever happened (it removes the
# staging directory, which holds every secret in clear, and records the
# result for the warden and `appliance backup now`).
#
# restic rather than borg: it reaches SFTP and S3 repositories with no
# program of its own on the other side, and encrypts every repository.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.appliance.backup;
  inherit (import ./lib.nix lib) generatedFile;
  # A host path: it lands in systemd's `Environment=` and restic's
  # arguments unquoted, and must never be a store path (world-readable).
  hostPath = lib.types.strMatching "/[A-Za-z0-9._+/-]*";
  appliance = args: lib.escapeShellArgs ([ (lib.getExe' cfg.package "appliance") ] ++ args);
  configArgs = [
    "--config"
    "${cfg.configFile}"
  ];
  keep = what: default: lib.mkOption {
    type = lib.types.ints.unsigned;
    inherit default;
    description = "Snapshots `restic forget --prune` keeps, one per ${what}.";
  };
  postgresql = lib.optional config.services.postgresql.enable config.services.postgresql.package;
  # Where `cleanup` records each run's result: the generated config says.
  statusFile = (lib.importJSON cfg.configFile).status_file;
in
{
  options.appliance.backup = {
    enable = lib.mkEnableOption ''
      restic backups of the appliance's state (the agents' volumes,
      Synapse's database, media and signing key, the secrets) on a schedule'';

    package = lib.mkPackageOption pkgs "agent-appliance" { };

    configFile = generatedFile "backup.json" ''
      What is backed up and where it lives, as generated
      (generated/hosts/<host>/backup.json); installed as
      /etc/appliance/backup.json for `appliance backup` and `appliance restore`.
    '';

    repository = lib.mkOption {
      type = lib.types.str;
      example = "sftp:backup@nas.example.org:/srv/restic/magi";
      description = "restic's repository: an absolute path, `sftp:user@host:/path` or `s3:https://host/bucket/path`.";
    };

    passwordFile = lib.mkOption {
      type = hostPath;
      example = "/root/backup-password";
      description = "The host file holding the repository's password (root-only; never in the Nix store).";
    };

    environmentFile = lib.mkOption {
      type = lib.types.nullOr hostPath;
      default = null;
      example = "/root/backup-credentials";
      description = "A host env file with the remote's credentials (`AWS_ACCESS_KEY_ID`, ...), or `null`.";
    };

    stagingDir = lib.mkOption {
      type = hostPath;
      default = "/var/lib/appliance/backup/staging";
      description = "Where `appliance backup prepare` gathers the state (root-only): the one path restic backs up.";
    };

    schedule = lib.mkOption {
      type = lib.types.str;
      default = "daily";
      description = "When to back up: a systemd `OnCalendar` expression (the spec's `schedule`).";
    };

    keepDaily = keep "day" 7;
    keepWeekly = keep "week" 4;
    keepMonthly = keep "month" 6;
  };

  config = lib.mkIf cfg.enable {
    environment.etc."appliance/backup.json".source = cfg.configFile;
    # `appliance backup list|check` and `appliance restore` by hand.
    environment.systemPackages = [ pkgs.restic ] ++ postgresql;

    services.restic.backups.appliance = {
      inherit (cfg) repository passwordFile environmentFile;
      initialize = true;
      paths = [ cfg.stagingDir ];
      backupPrepareCommand = appliance ([ "backup" "prepare" ] ++ configArgs);
      # ExecStopPost: runs after a failure too, with `$SERVICE_RESULT`.
      backupCleanupCommand = appliance ([ "backup" "cleanup" ] ++ configArgs);
      timerConfig = {
        OnCalendar = cfg.schedule;
        Persistent = true;
        RandomizedDelaySec = "15m";
      };
      pruneOpts = [
        "--keep-daily ${toString cfg.keepDaily}"
        "--keep-weekly ${toString cfg.keepWeekly}"
        "--keep-monthly ${toString cfg.keepMonthly}"
      ];
    };
    # `pg_dump` for `appliance backup prepare`, and restic for its `restic
    # unlock` of a killed run's stale lock (docs/backup.md).
    systemd.services.restic-backups-appliance.path = [ pkgs.restic ] ++ postgresql;
    # The ops room hears of a failed run (docs/warden.md).
    appliance.warden.extraArgs = [
      "--backup-status"
      statusFile
    ];
  };
}
