//! On the Matrix host: backups of everything stateful with restic, and
//! restores (docs/backup.md). nixpkgs' `services.restic.backups.appliance`
//! (modules/backup.nix) runs `appliance backup prepare` before `restic
//! backup` of the staging directory and `appliance backup cleanup` after,
//! whatever happened; `appliance backup now|list|check` and `appliance
//! restore` are the operator's.
//!
//! Reads only `backup.json` (`config`), never the spec or the model.

use crate::schema::backup as config;
mod copy;
pub mod restic;
mod restore;
mod stage;
mod status;

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use config::BackupConfig;
pub use copy::{Copied, copy_tree};
pub use restore::{RestoreOptions, restore};
pub use stage::prepare;
pub use status::{Status, cleanup, read_status};

/// The file in the staging directory (and so in every snapshot) that says
/// what was staged.
pub const MANIFEST: &str = "manifest.json";
/// Bumped whenever the staging layout changes; restore refuses others.
pub const MANIFEST_SCHEMA: u32 = 1;

/// What one `prepare` put in the staging directory: `volumes/<name>`,
/// `postgresql/<database>.dump`, `paths/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub appliance: String,
    /// Unix seconds.
    pub created: u64,
    pub volumes: Vec<StagedItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<String>,
    pub paths: Vec<StagedItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedItem {
    pub name: String,
    /// Where it was taken from and goes back to.
    pub source: String,
    /// False when it did not exist (an agent that never ran).
    pub present: bool,
}

/// Reads `backup.json`, refusing another schema.
pub fn load(path: &Path) -> Result<BackupConfig> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "failed to read the backup config `{}`\nhint: it is generated when the spec has `[backup]` (docs/backup.md)",
            path.display()
        )
    })?;
    let config: BackupConfig =
        serde_json::from_str(&text).with_context(|| format!("`{}` is not a backup config", path.display()))?;
    if config.schema != config::CONFIG_SCHEMA {
        bail!(
            "`{}` has schema {}, this appliance reads {}\nhint: regenerate and deploy with the same `appliance` version",
            path.display(),
            config.schema,
            config::CONFIG_SCHEMA
        );
    }
    if let Some(problem) = paths_problem(&config) {
        bail!(
            "`{}` is not a backup config this appliance runs: {problem}",
            path.display()
        );
    }
    Ok(config)
}

/// Why the config's paths are unsafe to act on, if they are: `prepare` and
/// `restore` remove the staging directory and what they put back, so each
/// must be absolute, plain, and apart from the others.
fn paths_problem(config: &BackupConfig) -> Option<String> {
    let plain = |path: &str| {
        let p = Path::new(path);
        p.is_absolute()
            && p.components().count() >= 3
            && p.components()
                .all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)))
    };
    let mut named: Vec<(&str, &str)> = vec![
        ("staging_dir", &config.staging_dir),
        ("status_file", &config.status_file),
        ("volume_root", &config.volume_root),
    ];
    named.extend(config.paths.iter().map(|p| (p.name.as_str(), p.path.as_str())));
    if let Some((name, path)) = named.iter().find(|(_, path)| !plain(path)) {
        return Some(format!(
            "`{name}` is `{path}`, not an absolute path at least two directories deep without `.` or `..`"
        ));
    }
    let staging = Path::new(&config.staging_dir);
    let overlaps = |other: &str| {
        let other = Path::new(other);
        staging.starts_with(other) || other.starts_with(staging)
    };
    if let Some((name, path)) = named.iter().skip(1).find(|(_, path)| overlaps(path)) {
        return Some(format!("the staging directory and `{name}` (`{path}`) overlap"));
    }
    let names_ok = |name: &str| !name.is_empty() && !name.starts_with('.') && !name.contains('/');
    let items = config
        .volumes
        .iter()
        .map(|v| &v.name)
        .chain(config.paths.iter().map(|p| &p.name));
    if let Some(name) = items.into_iter().find(|name| !names_ok(name)) {
        return Some(format!("the item name `{name}` is not a plain file name"));
    }
    None
}

/// Where a volume's data lives under Docker's local driver.
pub fn volume_data(config: &BackupConfig, volume: &str) -> std::path::PathBuf {
    Path::new(&config.volume_root).join(volume).join("_data")
}

/// Removes a staging directory and all it holds.
pub fn remove_staging(staging: &Path) -> Result<()> {
    copy::remove(staging)
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now, in Unix seconds.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BackupConfig {
        serde_json::from_value(serde_json::json!({
            "schema": config::CONFIG_SCHEMA, "appliance": "magi", "repository": "/mnt/b", "password_file": "/root/p",
            "staging_dir": "/var/lib/appliance/backup/staging", "status_file": "/var/lib/appliance/backup/status.json",
            "unit": "restic-backups-appliance.service", "volume_root": "/var/lib/docker/volumes",
            "volumes": [{ "name": "appliance-casper-state", "agent": "casper" }],
            "paths": [{ "name": "appliance-secrets", "path": "/var/lib/appliance/secrets", "what": "secrets" }],
            "units": [],
        }))
        .unwrap()
    }

    #[test]
    fn a_config_that_would_remove_what_it_must_not_is_refused() {
        assert_eq!(paths_problem(&config()), None);
        for (staging, problem) in [
            ("/", "not an absolute path"),
            ("/var", "not an absolute path"),
            ("/var/lib/../etc", "not an absolute path"),
            ("relative/dir/x", "not an absolute path"),
            ("/var/lib/appliance", "overlap"),
            ("/var/lib/appliance/secrets/x", "overlap"),
        ] {
            let mut bad = config();
            bad.staging_dir = staging.to_string();
            let found = paths_problem(&bad).unwrap_or_default();
            assert!(found.contains(problem), "{staging}: {found}");
        }
        let mut bad = config();
        bad.volumes[0].name = "../../etc".into();
        assert!(paths_problem(&bad).is_some());
    }
}
