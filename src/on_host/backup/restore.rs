//! `appliance restore SNAPSHOT`: a snapshot put back, before the agents
//! and Synapse start: the agents' volumes, Synapse's database (into a fresh
//! one), its media and signing key, the appliance's secrets. Every piece
//! is copied beside its place and renamed over it, so a killed restore
//! leaves each piece old or new, and a rerun completes it.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::config::{BackupConfig, Postgresql};
use super::copy::{copy_tree, remove};
use super::stage::{fresh_staging, postgres_command, run};
use super::{MANIFEST, MANIFEST_SCHEMA, Manifest, restic, volume_data};

pub struct RestoreOptions<'a> {
    /// The restic program.
    pub restic: &'a str,
    pub snapshot: &'a str,
    /// Restore even while the units that use the state run.
    pub force: bool,
    /// The docker CLI that registers each volume before its data is put
    /// back; none: the directories only (no Docker on this machine).
    pub docker: Option<&'a str>,
    /// Names of the config's paths left as they are (an upgrade's rollback
    /// keeps the warden's directory, its state and the audit trail that
    /// records the rollback).
    pub keep: &'a [String],
}

pub fn restore(config: &BackupConfig, options: &RestoreOptions, say: &mut dyn FnMut(&str)) -> Result<()> {
    if !options.force {
        refuse_while_running(&config.units)?;
    }
    let staging = Path::new(&config.staging_dir);
    fresh_staging(staging)?;
    restic::restore(options.restic, config, options.snapshot, staging)?;
    let staged = find_manifest(staging)?;
    let manifest = read_manifest(&staged.join(MANIFEST), config)?;
    say(&format!(
        "snapshot `{}` of appliance `{}`, staged at {} (Unix time)",
        options.snapshot, manifest.appliance, manifest.created
    ));

    for item in manifest.volumes.iter().filter(|v| v.present) {
        let Some(volume) = config.volumes.iter().find(|v| v.name == item.name) else {
            say(&format!("volume `{}`: not in this host's config, left out", item.name));
            continue;
        };
        let data = volume_data(config, &volume.name);
        if let Some(docker) = options.docker {
            register_volume(docker, &volume.name)?;
        }
        if let Some(root) = data.parent() {
            // As Docker's local driver makes a volume's directory.
            fs::DirBuilder::new().recursive(true).mode(0o701).create(root)?;
        }
        put_back(&staged.join("volumes").join(&item.name), &data)?;
        say(&format!(
            "volume `{}` (agent `{}`): restored",
            volume.name, volume.agent
        ));
    }
    match (&manifest.postgresql, &config.postgresql) {
        (Some(file), Some(pg)) => {
            restore_database(pg, &staged.join("postgresql").join(file))?;
            say(&format!("database `{}`: restored into a fresh database", pg.database));
        }
        (Some(_), None) => say("the snapshot has a PostgreSQL dump, but this host's Synapse uses SQLite: left out"),
        _ => {}
    }
    for item in manifest.paths.iter().filter(|p| p.present) {
        let Some(path) = config.paths.iter().find(|p| p.name == item.name) else {
            say(&format!("`{}`: not in this host's config, left out", item.name));
            continue;
        };
        if options.keep.contains(&item.name) {
            say(&format!("{}: left as it is", path.what));
            continue;
        }
        put_back(&staged.join("paths").join(&item.name), Path::new(&path.path))?;
        say(&format!("{}: restored to {}", path.what, path.path));
    }
    remove(staging)?;
    Ok(())
}

/// `docker volume create NAME` (nothing when it exists). Before the data:
/// a volume Docker does not know yet is made by its local driver at first
/// use, which then gives the existing `_data` to root, and the agent could
/// no longer write at the top of its own volume.
fn register_volume(docker: &str, name: &str) -> Result<()> {
    let mut command = Command::new(docker);
    command.args(["volume", "create", name]);
    run(&mut command, "docker volume create").with_context(|| {
        format!("failed to register volume `{name}` with Docker\nhint: start Docker first, or pass `--without-docker` to put the directories back only")
    })
}

/// Refuses while any of `units` is active: state put back under a running
/// Synapse or agent would be overwritten or half-read.
fn refuse_while_running(units: &[String]) -> Result<()> {
    if units.is_empty() {
        return Ok(());
    }
    let mut running = Vec::new();
    for unit in units {
        let status = Command::new("systemctl")
            .args(["is-active", "--quiet", unit])
            .status()
            .context(
                "failed to ask systemd which units run\nhint: pass `--force` only if you know none of them runs",
            )?;
        if status.success() {
            running.push(unit.as_str());
        }
    }
    if !running.is_empty() {
        bail!(
            "these units run and use the state a restore replaces: {}\nhint: stop them first (`systemctl stop {}`), or pass `--force`",
            running.join(", "),
            running.join(" ")
        );
    }
    Ok(())
}

/// The directory holding the manifest under `target`: restic restores a
/// snapshot's path with all its parents. The shallowest one: an agent's
/// volume may hold a file of that name too.
fn find_manifest(target: &Path) -> Result<PathBuf> {
    walkdir::WalkDir::new(target)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.file_name() == MANIFEST)
        .min_by_key(walkdir::DirEntry::depth)
        .and_then(|e| e.path().parent().map(Path::to_path_buf))
        .with_context(|| "the snapshot has no `manifest.json`: it was not made by `appliance backup`".to_string())
}

fn read_manifest(path: &Path, config: &BackupConfig) -> Result<Manifest> {
    let text = fs::read_to_string(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let manifest: Manifest =
        serde_json::from_str(&text).context("the snapshot's manifest is not one this appliance reads")?;
    if manifest.schema != MANIFEST_SCHEMA {
        bail!(
            "the snapshot's manifest has schema {}, this appliance reads {}",
            manifest.schema,
            MANIFEST_SCHEMA
        );
    }
    if manifest.appliance != config.appliance {
        bail!(
            "the snapshot is of appliance `{}`, this host is appliance `{}`",
            manifest.appliance,
            config.appliance
        );
    }
    Ok(manifest)
}

/// `staged` copied beside `dest`, then renamed over it.
fn put_back(staged: &Path, dest: &Path) -> Result<()> {
    let name = dest
        .file_name()
        .with_context(|| format!("`{}` names no file", dest.display()))?;
    let parent = dest.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(parent).with_context(|| format!("failed to create `{}`", parent.display()))?;
    let beside = parent.join(format!(".{}.appliance-restore", name.to_string_lossy()));
    remove(&beside)?;
    copy_tree(staged, &beside)?;
    remove(dest)?;
    fs::rename(&beside, dest).with_context(|| format!("failed to put `{}` in place", dest.display()))?;
    Ok(())
}

/// The dump restored into a fresh database made as NixOS makes Synapse's
/// (C collation, which Synapse requires, owned by its role).
fn restore_database(pg: &Postgresql, dump: &Path) -> Result<()> {
    let mut drop = postgres_command("dropdb", pg);
    drop.arg("--if-exists").arg(&pg.database);
    run(&mut drop, "dropdb")?;
    let mut create = postgres_command("createdb", pg);
    create
        .args(["--template=template0", "--locale=C", "--encoding=UTF8", "--owner"])
        .arg(&pg.owner)
        .arg(&pg.database);
    run(&mut create, "createdb")?;
    let file = fs::File::open(dump).with_context(|| format!("failed to open `{}`", dump.display()))?;
    let mut restore = postgres_command("pg_restore", pg);
    restore
        .args(["--exit-on-error", "--dbname"])
        .arg(&pg.database)
        .stdin(file);
    run(&mut restore, "pg_restore")
}
