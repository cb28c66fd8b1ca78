//! `appliance backup now|list|check|prepare|cleanup` and `appliance
//! restore`: the operator's side of `backup` (docs/backup.md).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::common::term;
use crate::on_host::backup::{self, BackupConfig, RestoreOptions, restic};
use crate::operator::cli::{BackupCommand, BackupConfigArgs, BackupResticArgs, RestoreArgs};

pub fn run(command: &BackupCommand) -> Result<()> {
    match command {
        BackupCommand::Now(args) => now(&backup::load(&args.config)?),
        BackupCommand::List(args) => list(args),
        BackupCommand::Check(args) => {
            let config = backup::load(&args.restic.config.config)?;
            let report = restic::check(&args.restic.restic, &config, args.read_data)?;
            term::print(&report)?;
            Ok(())
        }
        BackupCommand::Prepare(args) => prepare(args),
        BackupCommand::Cleanup(args) => cleanup(args),
    }
}

fn prepare(args: &BackupConfigArgs) -> Result<()> {
    let config = backup::load(&args.config)?;
    // The unit's `forget --prune` needs an exclusive lock, which a killed
    // run's stale lock would refuse on every run after it (restic from
    // the unit's PATH, modules/backup.nix).
    if let Err(why) = restic::unlock("restic", &config) {
        term::eprintln(&format!(
            "stale locks not removed (a repository not made yet has none): {why}"
        ));
    }
    let manifest = backup::prepare(&config, &mut |line| term::eprintln(line))?;
    term::eprintln(&format!(
        "staged in {}: {} volumes, {} paths{}",
        config.staging_dir,
        manifest.volumes.iter().filter(|v| v.present).count(),
        manifest.paths.iter().filter(|p| p.present).count(),
        if manifest.postgresql.is_some() {
            ", the database"
        } else {
            ""
        }
    ));
    Ok(())
}

/// systemd hands `ExecStopPost` the run's result in `SERVICE_RESULT` and
/// `EXIT_STATUS` (systemd.exec(5)).
fn cleanup(args: &BackupConfigArgs) -> Result<()> {
    let config = backup::load(&args.config)?;
    let result = std::env::var("SERVICE_RESULT").ok();
    let exit = std::env::var("EXIT_STATUS").ok();
    let status = backup::cleanup(&config, result.as_deref(), exit.as_deref())?;
    term::eprintln(&format!(
        "backup {}: {}{}",
        if status.ok { "succeeded" } else { "failed" },
        status.service_result,
        status
            .exit_status
            .map(|s| format!(" (exit status {s})"))
            .unwrap_or_default()
    ));
    Ok(())
}

/// Starts the restic unit and waits for it (a oneshot's start job ends
/// with its run), then reports what `cleanup` recorded.
fn now(config: &BackupConfig) -> Result<()> {
    let before = backup::read_status(Path::new(&config.status_file))?;
    let status = Command::new("systemctl")
        .args(["start", &config.unit])
        .status()
        .context("failed to run `systemctl`")?;
    let after = backup::read_status(Path::new(&config.status_file))?;
    let recorded = after.filter(|a| Some(a) != before.as_ref());
    match recorded {
        Some(run) if run.ok && status.success() => {
            term::println("backup succeeded; `appliance backup list` shows the snapshot")?;
            Ok(())
        }
        Some(run) => bail!(
            "the backup failed: {}{}\nhint: `journalctl -u {}` says why",
            run.service_result,
            run.exit_status
                .map(|s| format!(" (exit status {s})"))
                .unwrap_or_default(),
            config.unit
        ),
        None => bail!(
            "`systemctl start {}` {} and recorded no result\nhint: `journalctl -u {}` says why",
            config.unit,
            if status.success() { "returned" } else { "failed" },
            config.unit
        ),
    }
}

fn list(args: &BackupResticArgs) -> Result<()> {
    let config = backup::load(&args.config.config)?;
    let snapshots = restic::snapshots(&args.restic, &config)?;
    if snapshots.is_empty() {
        term::eprintln(&format!("no snapshots yet in `{}`", config.repository));
        return Ok(());
    }
    let mut out = format!("{:<10}  {:<25}  {:<16}  TAGS\n", "ID", "TIME", "HOST");
    for s in &snapshots {
        let id = if s.short_id.is_empty() {
            &s.id[..s.id.len().min(8)]
        } else {
            &s.short_id
        };
        let time: String = s.time.chars().take(19).collect::<String>().replace('T', " ");
        out.push_str(&format!(
            "{:<10}  {:<25}  {:<16}  {}\n",
            term::inert(id),
            term::inert(&time),
            term::inert(&s.hostname),
            term::inert(&s.tags.join(","))
        ));
    }
    term::print(&out)?;
    Ok(())
}

pub fn restore(args: &RestoreArgs) -> Result<()> {
    let config = backup::load(&args.restic.config.config)?;
    let options = RestoreOptions {
        restic: &args.restic.restic,
        snapshot: &args.snapshot,
        force: args.force,
        docker: (!args.without_docker).then_some(args.docker.as_str()),
        keep: &[],
    };
    backup::restore(&config, &options, &mut |line| term::eprintln(line))?;
    term::println(&format!(
        "restored snapshot `{}`; start the appliance (`systemctl start matrix-synapse appliance-ready.target`)",
        args.snapshot
    ))?;
    Ok(())
}
