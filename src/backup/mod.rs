//! On the Matrix host: backups of everything stateful with restic, and
//! restores (docs/backup.md). nixpkgs' `services.restic.backups.appliance`
//! (modules/backup.nix) runs `appliance backup prepare` before `restic
//! backup` of the staging directory and `appliance backup cleanup` after,
//! whatever happened; `appliance backup now|list|check` and `appliance
//! restore` are the operator's.
//!
//! Reads only `backup.json` (`config`), never the spec or the model.

pub mod config;
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
    Ok(config)
}

/// Where a volume's data lives under Docker's local driver.
pub fn volume_data(config: &BackupConfig, volume: &str) -> std::path::PathBuf {
    Path::new(&config.volume_root).join(volume).join("_data")
}

/// Now, in Unix seconds.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
