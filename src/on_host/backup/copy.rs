//! Copying a file tree as it is (modes, owners, symlinks), with every
//! SQLite database in it copied through SQLite's online backup API: a
//! consistent snapshot even while the agent writes to it, which a plain
//! copy of the database file and its `-wal` is not.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";
/// How long one database may stay busy (a writer holding its lock) before
/// the copy gives up.
const SQLITE_BUSY_LIMIT: Duration = Duration::from_secs(60);

/// What a copy did, for the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    pub files: usize,
    pub databases: usize,
    /// Sockets, FIFOs and devices, which are not state.
    pub skipped: usize,
    /// Entries removed while the copy ran (an agent's temporary files).
    pub vanished: usize,
}

impl Copied {
    fn add(&mut self, other: Copied) {
        self.files += other.files;
        self.databases += other.databases;
        self.skipped += other.skipped;
        self.vanished += other.vanished;
    }
}

/// Copies `from` (a file, a symlink or a directory) to `to`, which must
/// not exist, keeping modes, owners (when root) and modification times.
pub fn copy_tree(from: &Path, to: &Path) -> Result<Copied> {
    let meta = fs::symlink_metadata(from).with_context(|| format!("failed to read `{}`", from.display()))?;
    let kind = meta.file_type();
    let mut copied = Copied::default();
    if kind.is_symlink() {
        let target = fs::read_link(from).with_context(|| format!("failed to read link `{}`", from.display()))?;
        std::os::unix::fs::symlink(&target, to).with_context(|| format!("failed to create `{}`", to.display()))?;
        keep_owner(to, &meta, true)?;
        copied.files += 1;
    } else if kind.is_dir() {
        fs::create_dir(to).with_context(|| format!("failed to create `{}`", to.display()))?;
        // Owner-writable until its contents are in; its own mode last.
        fs::set_permissions(to, fs::Permissions::from_mode(0o700))?;
        copied.add(copy_dir_contents(from, to)?);
        keep_attributes(to, &meta)?;
    } else if kind.is_file() {
        if is_sqlite(from)? {
            copy_database(from, to)?;
            copied.databases += 1;
        } else {
            fs::copy(from, to).with_context(|| format!("failed to copy `{}`", from.display()))?;
            copied.files += 1;
        }
        keep_attributes(to, &meta)?;
    } else {
        copied.skipped += 1;
    }
    Ok(copied)
}

/// Every entry of `from` into the existing `to`, sorted; a database's
/// `-wal`, `-shm` and `-journal` are left out, its copy being complete.
fn copy_dir_contents(from: &Path, to: &Path) -> Result<Copied> {
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(from)
        .with_context(|| format!("failed to list `{}`", from.display()))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("failed to list `{}`", from.display()))?;
    names.sort();
    let mut databases = Vec::new();
    for name in &names {
        let path = from.join(name);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) && is_sqlite(&path).unwrap_or(false) {
            databases.push(name.to_string_lossy().into_owned());
        }
    }
    let companion = |name: &str| {
        ["-wal", "-shm", "-journal"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|db| databases.iter().any(|d| d == db))
        })
    };
    let mut copied = Copied::default();
    for name in &names {
        if companion(&name.to_string_lossy()) {
            continue;
        }
        let (source, target) = (from.join(name), to.join(name));
        match copy_tree(&source, &target) {
            Ok(more) => copied.add(more),
            // Removed by its owner between the listing and the copy: it is
            // not part of the state any more.
            Err(_) if fs::symlink_metadata(&source).is_err() => {
                remove(&target)?;
                copied.vanished += 1;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(copied)
}

/// Whether `path` begins like an SQLite 3 database.
fn is_sqlite(path: &Path) -> Result<bool> {
    let mut header = [0u8; 16];
    let mut file = fs::File::open(path).with_context(|| format!("failed to open `{}`", path.display()))?;
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..])? {
            0 => return Ok(false),
            n => read += n,
        }
    }
    Ok(&header == SQLITE_HEADER)
}

/// SQLite's online backup of `from` into a new database at `to`. Each
/// step takes every page at once under a read lock, so the copy is one
/// consistent state of the database; a writer holding its lock is waited
/// for. (Opened read-write: a WAL database needs its `-shm`; run as root,
/// SQLite gives any file it creates there the database's owner.)
fn copy_database(from: &Path, to: &Path) -> Result<()> {
    let source = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("failed to open the database `{}`", from.display()))?;
    source.busy_timeout(Duration::from_secs(5))?;
    let mut target =
        Connection::open(to).with_context(|| format!("failed to create the database copy `{}`", to.display()))?;
    {
        let backup = Backup::new(&source, &mut target)
            .with_context(|| format!("failed to start copying the database `{}`", from.display()))?;
        let started = Instant::now();
        loop {
            match backup
                .step(-1)
                .with_context(|| format!("failed to copy the database `{}`", from.display()))?
            {
                StepResult::Done => break,
                StepResult::More => {}
                _ if started.elapsed() > SQLITE_BUSY_LIMIT => {
                    bail!(
                        "the database `{}` stayed locked for {} s",
                        from.display(),
                        SQLITE_BUSY_LIMIT.as_secs()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    target
        .close()
        .map_err(|(_, e)| e)
        .with_context(|| format!("failed to close the database copy `{}`", to.display()))?;
    Ok(())
}

/// The source's mode, owner and modification time on the copy.
fn keep_attributes(to: &Path, meta: &fs::Metadata) -> Result<()> {
    keep_owner(to, meta, false)?;
    fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .with_context(|| format!("failed to set the mode of `{}`", to.display()))?;
    if let Ok(modified) = meta.modified()
        && meta.is_file()
    {
        let file = fs::File::options().write(true).open(to);
        if let Ok(file) = file {
            let _ = file.set_modified(modified);
        }
    }
    Ok(())
}

/// As root, the source's owner (before the mode: `chown` clears setuid).
fn keep_owner(to: &Path, meta: &fs::Metadata, symlink: bool) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let result = if symlink {
        std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
    } else {
        std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid()))
    };
    result.with_context(|| format!("failed to set the owner of `{}`", to.display()))
}

/// Removes `path` whatever it is; nothing when it does not exist.
pub fn remove(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("failed to read `{}`", path.display())),
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir_all(path).with_context(|| format!("failed to remove `{}`", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("failed to remove `{}`", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_copied_with_modes_and_its_database_through_the_backup_api() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        fs::create_dir(&from).unwrap();
        fs::write(from.join("note"), "kept").unwrap();
        fs::set_permissions(from.join("note"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("note", from.join("link")).unwrap();
        let db = Connection::open(from.join("state.db")).unwrap();
        db.pragma_update(None, "journal_mode", "wal").unwrap();
        db.execute_batch("CREATE TABLE facts (fact TEXT); INSERT INTO facts VALUES ('the sky is green');")
            .unwrap();
        // Open, with its -wal beside it: the write is only in the WAL.
        assert!(from.join("state.db-wal").exists());
        fs::set_permissions(&from, fs::Permissions::from_mode(0o750)).unwrap();

        let to = dir.path().join("to");
        let copied = copy_tree(&from, &to).unwrap();
        assert_eq!(
            copied,
            Copied {
                files: 2,
                databases: 1,
                skipped: 0,
                vanished: 0,
            }
        );
        assert!(!to.join("state.db-wal").exists());
        let copy = Connection::open(to.join("state.db")).unwrap();
        let fact: String = copy.query_row("SELECT fact FROM facts", [], |r| r.get(0)).unwrap();
        assert_eq!(fact, "the sky is green");
        assert_eq!(fs::read_to_string(to.join("note")).unwrap(), "kept");
        assert_eq!(fs::metadata(to.join("note")).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::metadata(&to).unwrap().mode() & 0o777, 0o750);
        assert_eq!(fs::read_link(to.join("link")).unwrap(), Path::new("note"));
        drop(db);
    }
}
