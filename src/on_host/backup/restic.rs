//! restic, run with the config's repository, password file and
//! credentials, as the NixOS unit runs it (`RESTIC_REPOSITORY`,
//! `RESTIC_PASSWORD_FILE`, the environment file's variables).

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::config::BackupConfig;

/// One snapshot, as `restic snapshots --json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    pub id: String,
    #[serde(default)]
    pub short_id: String,
    pub time: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `restic ARGS` for the config's repository.
pub fn command(restic: &str, config: &BackupConfig) -> Result<Command> {
    let mut command = Command::new(restic);
    command
        .env("RESTIC_REPOSITORY", &config.repository)
        .env("RESTIC_PASSWORD_FILE", &config.password_file)
        .stdin(Stdio::null());
    die_with_parent(&mut command);
    if let Some(file) = &config.environment_file {
        for (name, value) in environment_file(file)? {
            command.env(name, value);
        }
    }
    Ok(command)
}

/// restic is killed when the `appliance` that ran it dies, even by
/// `kill -9`: an orphaned restic would go on writing into the staging
/// directory that the next run empties, and hold its lock on the
/// repository (docs/backup.md, "Killed mid-way"). Under systemd the unit's
/// cgroup is killed whole anyway; this is for a root shell's `appliance
/// restore` or `appliance upgrade`.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only `prctl(PR_SET_PDEATHSIG)` runs,
    // one system call, which allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// The variables of a systemd environment file: `NAME=value` lines,
/// `#` comments, a value's surrounding quotes removed.
fn environment_file(path: &str) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the backup's environment file `{path}`"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with(';'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| {
            let value = value.trim();
            let unquoted = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            (name.trim().to_string(), unquoted.to_string())
        })
        .collect())
}

/// Runs restic, failing with what it said.
fn output(mut command: Command, what: &str) -> Result<std::process::Output> {
    let out = command
        .output()
        .with_context(|| format!("failed to run restic to {what}\nhint: install restic (`pkgs.restic`)"))?;
    super::stage::succeeded(out, format_args!("restic failed to {what}"))
}

/// `restic unlock`: removes the locks of restic processes that are gone
/// (on this host, or more than 30 minutes old, restic's rule), never a
/// live one's. A restic killed mid-way (`kill -9`, a power cut) leaves its
/// lock, and restic 0.14 then refuses every exclusive lock (`check`,
/// `forget --prune`) until it is removed. Best effort: a repository not
/// made yet (the unit's first run) has nothing to unlock; what went wrong
/// is returned for the caller to say.
pub fn unlock(restic: &str, config: &BackupConfig) -> std::result::Result<(), String> {
    let mut command = command(restic, config).map_err(|e| format!("{e:#}"))?;
    command.arg("unlock");
    output(command, "remove stale locks")
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

/// The repository's snapshots, oldest first.
pub fn snapshots(restic: &str, config: &BackupConfig) -> Result<Vec<Snapshot>> {
    let mut command = command(restic, config)?;
    command.args(["snapshots", "--json"]);
    let out = output(command, "list the snapshots")?;
    serde_json::from_slice::<Option<Vec<Snapshot>>>(&out.stdout)
        .map(Option::unwrap_or_default)
        .context("restic's snapshot list is not the JSON expected")
}

/// `restic check`: the repository's structure and, with `read_data`,
/// every pack's contents. Its report, or an error with it.
pub fn check(restic: &str, config: &BackupConfig, read_data: bool) -> Result<String> {
    // A killed run's lock would fail the check, not the repository.
    let _ = unlock(restic, config);
    let mut command = command(restic, config)?;
    command.arg("check");
    if read_data {
        command.arg("--read-data");
    }
    let out = command
        .output()
        .context("failed to run restic to check the repository\nhint: install restic (`pkgs.restic`)")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "the repository `{}` failed its check:\n{}",
            config.repository,
            report.trim_end()
        );
    }
    Ok(report)
}

/// `restic restore SNAPSHOT --target DIR`: the snapshot's paths, as they
/// were backed up, under `target`.
pub fn restore(restic: &str, config: &BackupConfig, snapshot: &str, target: &std::path::Path) -> Result<()> {
    if snapshot.is_empty() || snapshot.starts_with('-') {
        bail!("`{snapshot}` is not a snapshot id\nhint: `appliance backup list` shows them");
    }
    // A killed run's stale lock; when this fails, so does the restore,
    // which says why.
    let _ = unlock(restic, config);
    let mut command = command(restic, config)?;
    command.args(["restore", snapshot, "--target"]).arg(target);
    output(command, &format!("restore snapshot `{snapshot}`"))?;
    Ok(())
}
