//! Secret files: created once, never rewritten unless their content must
//! change, never printed. Files are 0400 and directories 0700, owned by the
//! one consumer that reads them (ownership is only changed when running as
//! root; unprivileged runs, as in tests, keep their own uid).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Who may read a secret: the uid and gid of its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

pub const FILE_MODE: u32 = 0o400;
pub const DIR_MODE: u32 = 0o700;
/// Directories that consumers only pass through (the state directory and
/// `secrets/`): traversable, not listable.
pub const TRAVERSE_MODE: u32 = 0o711;

/// What `ensure_*` did, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Kept,
    Created,
    /// Content kept, mode or owner corrected.
    Repaired,
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Sets mode and (as root) owner; true when something had to change.
fn fix_metadata(path: &Path, mode: u32, owner: Owner) -> Result<bool> {
    let meta =
        fs::symlink_metadata(path).with_context(|| format!("failed to read metadata of `{}`", path.display()))?;
    if meta.file_type().is_symlink() {
        bail!(
            "`{}` is a symbolic link; refusing to follow it for a secret\nhint: remove it and rerun `appliance bootstrap`",
            path.display()
        );
    }
    let mut changed = false;
    if meta.mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("failed to set mode {mode:o} on `{}`", path.display()))?;
        changed = true;
    }
    if is_root() && (meta.uid() != owner.uid || meta.gid() != owner.gid) {
        std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))
            .with_context(|| format!("failed to chown `{}` to {}:{}", path.display(), owner.uid, owner.gid))?;
        changed = true;
    }
    Ok(changed)
}

/// Creates `path` (and missing parents, as root-owned 0711) with `mode`
/// and `owner`, or corrects the mode and owner of an existing directory.
pub fn ensure_dir(path: &Path, mode: u32, owner: Owner) -> Result<Outcome> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        ensure_dir(parent, TRAVERSE_MODE, Owner::ROOT)?;
    }
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            fix_metadata(path, mode, owner)?;
            Ok(Outcome::Created)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if !fs::symlink_metadata(path)?.is_dir() {
                bail!("`{}` exists and is not a directory", path.display());
            }
            Ok(if fix_metadata(path, mode, owner)? {
                Outcome::Repaired
            } else {
                Outcome::Kept
            })
        }
        Err(e) => Err(e).with_context(|| format!("failed to create directory `{}`", path.display())),
    }
}

/// The `NAME=VALUE` entries of an env file (Docker `--env-file`), in order.
pub fn env_entries(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| line.split_once('='))
}

/// Reads a secret; `None` when the file is missing or empty (an empty
/// secret is never written by us, so it is treated as missing).
pub fn read(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => Ok(Some(text.trim_end_matches('\n').to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read secret `{}`", path.display())),
    }
}

/// Writes a secret atomically: a kill leaves either the old file or the new
/// one, never half of one (atomic on one filesystem only; the temporary file
/// sits next to the target for that reason). Skips the write when the
/// content is already there, so reruns change no byte and no mtime.
pub fn write(path: &Path, content: &str, owner: Owner) -> Result<Outcome> {
    if let Ok(existing) = fs::read(path)
        && existing == content.as_bytes()
    {
        let repaired = fix_metadata(path, FILE_MODE, owner)?;
        return Ok(if repaired { Outcome::Repaired } else { Outcome::Kept });
    }
    let name = path
        .file_name()
        .context("secret path has no file name")?
        .to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.partial"));
    // A leftover from a killed run: we hold the bootstrap lock, so nobody
    // else is writing it.
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("failed to remove `{}`", temp.display())),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("failed to create `{}`", temp.display()))?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write `{}`", temp.display()))?;
    drop(file);
    fix_metadata(&temp, FILE_MODE, owner)?;
    fs::rename(&temp, path)
        .with_context(|| format!("failed to rename `{}` to `{}`", temp.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        // Make the rename itself durable.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("failed to sync directory `{}`", dir.display()))?;
    }
    Ok(Outcome::Created)
}

/// Returns the secret at `path`, creating it from `generate` when missing;
/// an existing secret keeps its value and gets its mode and owner fixed.
pub fn ensure(path: &Path, owner: Owner, generate: impl FnOnce() -> Result<String>) -> Result<(String, Outcome)> {
    if let Some(value) = read(path)? {
        let repaired = fix_metadata(path, FILE_MODE, owner)?;
        return Ok((value, if repaired { Outcome::Repaired } else { Outcome::Kept }));
    }
    let value = generate()?;
    write(path, &value, owner)?;
    Ok((value, Outcome::Created))
}

/// `bytes` random bytes from the OS, hex-encoded (safe in env files, YAML
/// and URLs).
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("failed to get random bytes from the OS: {e}"))?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_is_atomic_and_skips_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let me = Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        };
        assert_eq!(write(&path, "one", me).unwrap(), Outcome::Created);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o400);
        let mtime = fs::metadata(&path).unwrap().mtime_nsec();
        assert_eq!(write(&path, "one", me).unwrap(), Outcome::Kept);
        assert_eq!(fs::metadata(&path).unwrap().mtime_nsec(), mtime);
        assert_eq!(write(&path, "two", me).unwrap(), Outcome::Created);
        assert_eq!(read(&path).unwrap().as_deref(), Some("two"));
        assert!(!dir.path().join(".s.partial").exists());
    }

    #[test]
    fn ensure_keeps_existing_values_and_fixes_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        fs::write(&path, "kept\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let me = Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        };
        let (value, outcome) = ensure(&path, me, || unreachable!()).unwrap();
        assert_eq!((value.as_str(), outcome), ("kept", Outcome::Repaired));
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o400);
    }

    #[test]
    fn random_hex_is_hex_of_the_right_length() {
        let a = random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(32).unwrap());
    }
}
