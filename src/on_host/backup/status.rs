//! `appliance backup cleanup` (the restic unit's `ExecStopPost`, run
//! whatever happened): the staging directory removed and the run's result
//! recorded where the warden and `appliance backup now` read it.

use std::fs;
use std::path::Path;

use crate::on_host::atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::config::BackupConfig;
use super::copy::remove;
use super::now_secs;

/// The last run, as systemd reported it to `ExecStopPost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// Whether the run succeeded (`$SERVICE_RESULT` is `success`).
    pub ok: bool,
    /// `$SERVICE_RESULT`: `success`, `exit-code`, `timeout`, ...
    pub service_result: String,
    /// `$EXIT_STATUS` of the last command that ran, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<String>,
    /// Unix seconds.
    pub finished: u64,
}

/// Removes the staging directory (it holds every secret in clear) and
/// records the result. `service_result` is none outside systemd: the run
/// is then recorded as failed, never guessed a success.
pub fn cleanup(config: &BackupConfig, service_result: Option<&str>, exit_status: Option<&str>) -> Result<Status> {
    let removed = remove(Path::new(&config.staging_dir));
    let status = Status {
        ok: service_result == Some("success") && removed.is_ok(),
        service_result: service_result.unwrap_or("unknown").to_string(),
        exit_status: exit_status.filter(|s| !s.is_empty()).map(str::to_string),
        finished: now_secs(),
    };
    write_status(Path::new(&config.status_file), &status)?;
    removed?;
    Ok(status)
}

/// The last recorded run, if any.
pub fn read_status(path: &Path) -> Result<Option<Status>> {
    atomic::read_json(path, "a backup status")
}

/// Atomically: a reader sees the old status or the new one.
fn write_status(path: &Path, status: &Status) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
    atomic::replace(path, (serde_json::to_string(status)? + "\n").as_bytes(), None)
}
