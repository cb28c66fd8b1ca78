//! Where an upgrade is, saved atomically beside the backup status once
//! its snapshot exists: the next `appliance upgrade` finishes what a kill
//! interrupted, with the same snapshot and the same generation to go back to.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::on_host::backup::BackupConfig;

pub const FILE: &str = "upgrade.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// The state snapshot taken before the switch.
    pub snapshot: String,
    /// The system generation that ran before it.
    pub generation: u64,
    pub stage: Stage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Stage {
    /// Switching to the new system and gating it.
    Switching,
    /// Going back, because of what failed.
    RollingBack { failed: Vec<String> },
}

impl Stage {
    pub fn describe(&self) -> &'static str {
        match self {
            Stage::Switching => "during the switch or the health gate",
            Stage::RollingBack { .. } => "during its rollback",
        }
    }
}

/// The journal's place: beside the backup's status file.
pub fn path(config: &BackupConfig) -> PathBuf {
    Path::new(&config.status_file)
        .parent()
        .unwrap_or(Path::new("/"))
        .join(FILE)
}

impl Journal {
    pub fn load(path: &Path) -> Result<Option<Journal>> {
        crate::on_host::atomic::read_json(path, "an upgrade journal")
    }

    /// Atomically, and synced with its directory: after a crash the next
    /// run reads the old journal or the new one.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().context("the upgrade journal's path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
        let text = serde_json::to_string_pretty(self)? + "\n";
        crate::on_host::atomic::replace(path, text.as_bytes(), None)
    }
}

pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("failed to remove `{}`", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_round_trips_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        assert_eq!(Journal::load(&path).unwrap(), None);
        let journal = Journal {
            snapshot: "abc".into(),
            generation: 41,
            stage: Stage::RollingBack {
                failed: vec!["sandbox casper: down".into()],
            },
        };
        journal.save(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap(), Some(journal));
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(Journal::load(&path).unwrap(), None);
    }
}
