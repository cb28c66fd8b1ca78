//! `appliance backup prepare`: everything stateful gathered into the
//! staging directory, which restic then backs up as one path.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

use super::config::{BackupConfig, Postgresql};
use super::copy::{copy_tree, remove};
use super::{MANIFEST, MANIFEST_SCHEMA, Manifest, StagedItem, now_secs, volume_data};

/// Fills the staging directory afresh (a run killed half-way leaves one
/// behind: it is replaced), printing a line per item through `say`. The
/// repository's stale locks are the callers' (`appliance backup prepare`,
/// the upgrade's snapshot), with their restic.
pub fn prepare(config: &BackupConfig, say: &mut dyn FnMut(&str)) -> Result<Manifest> {
    let staging = Path::new(&config.staging_dir);
    fresh_staging(staging)?;
    for dir in ["volumes", "paths", "postgresql"] {
        fs::create_dir(staging.join(dir))?;
    }

    let mut volumes = Vec::new();
    for volume in &config.volumes {
        let source = volume_data(config, &volume.name);
        let present = stage_item(&source, &staging.join("volumes").join(&volume.name), say)
            .with_context(|| format!("failed to stage agent `{}`'s volume `{}`", volume.agent, volume.name))?;
        volumes.push(StagedItem {
            name: volume.name.clone(),
            source: source.display().to_string(),
            present,
        });
    }
    let postgresql = match &config.postgresql {
        Some(pg) => {
            let file = format!("{}.dump", pg.database);
            dump(pg, &staging.join("postgresql").join(&file))?;
            say(&format!("database `{}`: dumped (pg_dump, custom format)", pg.database));
            Some(file)
        }
        None => None,
    };
    let mut paths = Vec::new();
    for item in &config.paths {
        let present = stage_item(Path::new(&item.path), &staging.join("paths").join(&item.name), say)
            .with_context(|| format!("failed to stage {} (`{}`)", item.what, item.path))?;
        paths.push(StagedItem {
            name: item.name.clone(),
            source: item.path.clone(),
            present,
        });
    }
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        appliance: config.appliance.clone(),
        created: now_secs(),
        volumes,
        postgresql,
        paths,
    };
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    fs::write(staging.join(MANIFEST), text)?;
    Ok(manifest)
}

/// The staging directory, empty and root's alone (it holds every secret
/// of the appliance in clear), whatever a killed run left there.
pub(super) fn fresh_staging(staging: &Path) -> Result<()> {
    remove(staging)?;
    if let Some(parent) = staging.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("failed to create `{}`", parent.display()))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .with_context(|| format!("failed to create `{}`", staging.display()))?;
    // Whatever the umask made of it.
    fs::set_permissions(staging, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Copies one source into the staging directory; false when it is absent.
fn stage_item(source: &Path, staged: &Path, say: &mut dyn FnMut(&str)) -> Result<bool> {
    if fs::symlink_metadata(source).is_err() {
        say(&format!("{}: absent, skipped", source.display()));
        return Ok(false);
    }
    let copied = copy_tree(source, staged)?;
    say(&format!(
        "{}: {} files, {} SQLite databases (online backup)",
        source.display(),
        copied.files,
        copied.databases
    ));
    Ok(true)
}

/// `pg_dump -Fc` of the database over the local socket, run as the
/// server's superuser account (peer authentication); its output goes to a
/// file root opened, so that account needs no access to the staging dir.
///
/// pg_dump lists the tables, then locks each: a table dropped in between
/// fails the dump. Synapse's background updates make and drop work tables
/// (`_temp_populate_user_directory_rooms`, seen in CI on a fresh
/// homeserver), so that failure is tried again, a few times.
fn dump(pg: &Postgresql, to: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        let file = fs::File::create(to).with_context(|| format!("failed to create `{}`", to.display()))?;
        let mut command = postgres_command("pg_dump", pg);
        command
            .args(["--format=custom", "--dbname"])
            .arg(&pg.database)
            .stdout(file);
        match run(&mut command, "pg_dump") {
            Err(error) if tries < DUMP_TRIES && a_table_went_away(&error) => {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            result => return result,
        }
    }
}

/// How often a dump whose table went away mid-way is tried.
const DUMP_TRIES: u32 = 5;

/// Whether pg_dump failed because a table it listed was dropped before it
/// could lock it (`relation "..." does not exist`).
fn a_table_went_away(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}");
    text.contains("relation \"") && text.contains("does not exist")
}

/// A PostgreSQL client as the server's superuser, on the local socket.
pub(super) fn postgres_command(program: &str, pg: &Postgresql) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    command
        .arg("--host")
        .arg(&pg.socket_dir)
        .arg("--username")
        .arg(&pg.superuser)
        .arg("--no-password")
        .stdin(Stdio::null());
    let me = rustix::process::geteuid();
    if me.as_raw() != pg.uid {
        // std drops the supplementary groups when root changes uid.
        command.uid(pg.uid).gid(pg.gid);
    }
    command.current_dir("/");
    command
}

/// Runs `command`, failing with its stderr.
pub(super) fn run(command: &mut Command, name: &str) -> Result<()> {
    let out = command
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("failed to run `{name}`\nhint: it must be on PATH"))?;
    succeeded(out, format_args!("`{name}` failed")).map(drop)
}

/// `out` if its command succeeded; otherwise an error: what `failed`, its
/// exit status and what it said on stderr.
pub(super) fn succeeded(out: Output, failed: impl std::fmt::Display) -> Result<Output> {
    if !out.status.success() {
        bail!(
            "{failed} ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::a_table_went_away;

    #[test]
    fn only_a_table_dropped_mid_dump_is_tried_again() {
        let went_away = anyhow::anyhow!(
            "`pg_dump` failed (exit status: 1):\npg_dump: error: query failed: ERROR:  relation \"public._temp_populate_user_directory_rooms\" does not exist"
        );
        assert!(a_table_went_away(&went_away));
        let refused = anyhow::anyhow!(
            "`pg_dump` failed (exit status: 1):\npg_dump: error: connection to server failed: FATAL:  Peer authentication failed"
        );
        assert!(!a_table_went_away(&refused));
    }
}
