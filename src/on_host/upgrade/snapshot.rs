//! The upgrade's state snapshot: what the scheduled backup stages
//! (`backup::prepare`), backed up by restic with the system generation it
//! belongs to as a tag, and restored on a rollback. Its staging directory
//! is the scheduled one's sibling (`<staging>-upgrade`), so a scheduled run
//! at the same moment does not clobber it, nor it that run.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::on_host::backup::{self, BackupConfig, RestoreOptions, restic};

/// Every upgrade snapshot's tag; `generation-<N>` says which system.
pub const TAG: &str = "appliance-upgrade";

/// The config with the upgrade's own staging directory.
pub fn upgrade_config(config: &BackupConfig) -> BackupConfig {
    let mut own = config.clone();
    own.staging_dir = format!("{}-upgrade", config.staging_dir.trim_end_matches('/'));
    own
}

/// Stages the state, backs it up tagged with `generation`, removes the
/// staging directory whatever happened; the snapshot's id.
pub fn take(config: &BackupConfig, restic_program: &str, generation: u64, say: &mut dyn FnMut(&str)) -> Result<String> {
    let config = upgrade_config(config);
    let staging = Path::new(&config.staging_dir);
    // A killed run's stale lock; when this fails, so does the backup.
    let _ = restic::unlock(restic_program, &config);
    let result = backup::prepare(&config, say).and_then(|_| backup_staging(&config, restic_program, generation));
    // It holds every secret in clear.
    let removed = backup::remove_staging(staging);
    let id = result?;
    removed?;
    Ok(id)
}

fn backup_staging(config: &BackupConfig, restic_program: &str, generation: u64) -> Result<String> {
    let mut command = restic::command(restic_program, config)?;
    command
        .args(["backup", "--json", "--tag", TAG, "--tag"])
        .arg(format!("generation-{generation}"))
        .arg(&config.staging_dir);
    let out = command
        .output()
        .context("failed to run restic to take the upgrade's snapshot\nhint: install restic (`pkgs.restic`)")?;
    if !out.status.success() {
        bail!(
            "restic failed to take the upgrade's snapshot ({}):\n{}\nhint: nothing was switched; a repository the scheduled backup has not made yet is made by `appliance backup now`",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    // `--json` prints progress lines, then one summary with the id.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["message_type"] == "summary")
        .and_then(|v| v["snapshot_id"].as_str().map(str::to_string))
        .context("restic's backup summary named no snapshot")
}

/// Puts the snapshot back, leaving the warden's directory as it is (its
/// audit trail records the upgrade; rolling it back would erase that).
pub fn restore(
    config: &BackupConfig,
    restic_program: &str,
    snapshot: &str,
    docker: Option<&str>,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    let config = upgrade_config(config);
    let keep = [crate::schema::backup::WARDEN_ITEM.to_string()];
    let options = RestoreOptions {
        restic: restic_program,
        snapshot,
        // The upgrade stopped the units itself.
        force: true,
        docker,
        keep: &keep,
    };
    backup::restore(&config, &options, say)
}
