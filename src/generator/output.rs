//! Writing the generated tree: atomically, never over hand edits, never
//! touching files the generator did not write; and checking it for drift.
//!
//! The whole tree is built in a staging directory beside the output and
//! swapped in with one `renameat2(RENAME_EXCHANGE)`, so an interrupted run
//! leaves either the old tree or the new one. This holds on one filesystem
//! (the staging directory is a sibling, so it is); on filesystems without
//! RENAME_EXCHANGE we fall back to two renames with a short window in which
//! the output directory is absent.
//!
//! One write at a time per output directory: a write holds an exclusive
//! `flock` on `<parent>/.<name>.lock` from reading the old tree to the swap,
//! and a second `appliance generate` waits for it. So every staging
//! directory found while holding the lock belongs to a run that died, and
//! removing it cannot pull a tree out from under a live run. The kernel drops
//! the lock when its holder dies; the lock file stays, empty, and is reused.
//! This guards against other `appliance` runs only, and only where `flock`
//! works (not on some network filesystems).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use walkdir::WalkDir;

use crate::generator::render::Tree;

/// The manifest: `sha256sum` format, so `sha256sum -c SHA256SUMS` works.
pub const MANIFEST: &str = "SHA256SUMS";
const STAGING_MARK: &str = ".appliance-staging-";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The manifest of a tree: one `<sha256>  <path>` line per file.
pub fn manifest(tree: &Tree) -> String {
    tree.iter()
        .map(|(path, bytes)| format!("{}  {path}\n", sha256_hex(bytes)))
        .collect()
}

fn parse_manifest(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(digest, path)| (path.to_string(), digest.to_string()))
        .collect()
}

/// The tree plus its manifest: exactly what belongs in the output directory.
pub fn with_manifest(tree: &Tree) -> Tree {
    let mut full = tree.clone();
    full.insert(MANIFEST.to_string(), manifest(tree).into_bytes());
    full
}

/// Every regular file under `dir`, by relative `/`-separated path, read
/// into memory: for tests and trees known to be small. `write` and `drift`
/// never read files they did not write ([`scan`]).
pub fn read_tree(dir: &Path) -> Result<Tree> {
    let mut tree = Tree::new();
    for (relative, entry) in entries(dir)? {
        let bytes = if entry.file_type().is_file() {
            fs::read(entry.path()).with_context(|| format!("failed to read `{}`", entry.path().display()))?
        } else {
            // Symlinks and the like are never ours; keep them visible.
            Vec::new()
        };
        tree.insert(relative, bytes);
    }
    Ok(tree)
}

/// Every entry under `dir` but directories (none if `dir` does not exist),
/// sorted, with its relative `/`-separated path. Links are not followed.
fn entries(dir: &Path) -> Result<Vec<(String, walkdir::DirEntry)>> {
    let mut found = Vec::new();
    if !dir.exists() {
        return Ok(found);
    }
    for entry in WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("failed to read `{}`", dir.display()))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(dir)
            .expect("walkdir yields paths under its root")
            .to_string_lossy()
            .replace('\\', "/");
        found.push((relative, entry));
    }
    Ok(found)
}

/// What is at a path in the output directory, known from its metadata only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDisk {
    File {
        len: u64,
    },
    /// A symlink, FIFO, socket or device: never ours, never read or followed.
    Other,
}

/// Every entry under `dir` but directories, by relative `/`-separated path,
/// without reading any: a foreign file of any size costs nothing here.
fn scan(dir: &Path) -> Result<BTreeMap<String, OnDisk>> {
    let mut found = BTreeMap::new();
    for (relative, entry) in entries(dir)? {
        let on_disk = if entry.file_type().is_file() {
            let meta = entry
                .metadata()
                .with_context(|| format!("failed to inspect `{}`", entry.path().display()))?;
            OnDisk::File { len: meta.len() }
        } else {
            OnDisk::Other
        };
        found.insert(relative, on_disk);
    }
    Ok(found)
}

/// Whether `path` holds exactly `bytes`. Reads only a file of the same
/// length, and no more than that length (plus one byte, should it grow).
fn holds(path: &Path, on_disk: OnDisk, bytes: &[u8]) -> Result<bool> {
    let OnDisk::File { len } = on_disk else {
        return Ok(false);
    };
    if len != bytes.len() as u64 {
        return Ok(false);
    }
    let file = File::open(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let mut content = Vec::with_capacity(bytes.len());
    file.take(len + 1)
        .read_to_end(&mut content)
        .with_context(|| format!("failed to read `{}`", path.display()))?;
    Ok(content == bytes)
}

/// The SHA-256 of a file, read in pieces: memory stays small whatever its size.
fn digest_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("failed to read `{}`", path.display())),
        };
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Our manifests are a few KiB; one far larger is not ours to parse.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

fn read_manifest(path: &Path, on_disk: OnDisk) -> Result<String> {
    let too_large = matches!(on_disk, OnDisk::File { len } if len > MAX_MANIFEST_BYTES);
    if on_disk == OnDisk::Other || too_large {
        bail!(
            "`{}` is not a manifest appliance wrote (it is {})\n\
             hint: move it out of the way, or choose another directory with `--out`",
            path.display(),
            if too_large {
                "larger than 16 MiB"
            } else {
                "not a regular file"
            }
        );
    }
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_MANIFEST_BYTES).read_to_end(&mut bytes))
        .with_context(|| format!("failed to read `{}`", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// How the tree on disk differs from what the spec generates.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drift {
    pub differing: Vec<String>,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

impl Drift {
    pub fn is_clean(&self) -> bool {
        self.differing.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

pub fn drift(out: &Path, tree: &Tree) -> Result<Drift> {
    ensure_directory(out)?;
    let expected = with_manifest(tree);
    let actual = scan(out)?;
    let mut drift = Drift::default();
    for (path, bytes) in &expected {
        match actual.get(path) {
            None => drift.missing.push(path.clone()),
            Some(on_disk) if !holds(&out.join(path), *on_disk, bytes)? => drift.differing.push(path.clone()),
            Some(_) => {}
        }
    }
    drift.extra = actual.keys().filter(|p| !expected.contains_key(*p)).cloned().collect();
    Ok(drift)
}

/// What a write did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub written: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    /// Files in the output that the generator never wrote, left as they are.
    pub kept: Vec<String>,
}

/// Files that block a write unless `--force`.
#[derive(Debug)]
pub struct Conflicts {
    pub edited: Vec<String>,
    pub foreign: Vec<String>,
    pub out: PathBuf,
}

impl std::fmt::Display for Conflicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for path in &self.edited {
            writeln!(
                f,
                "error: `{}` was edited by hand since appliance wrote it",
                self.out.join(path).display()
            )?;
        }
        for path in &self.foreign {
            writeln!(
                f,
                "error: `{}` exists but was not written by appliance",
                self.out.join(path).display()
            )?;
        }
        write!(
            f,
            "hint: move the change into the spec (or out of the way) and run again; `--force` overwrites"
        )
    }
}

impl std::error::Error for Conflicts {}

/// Writes `tree` (plus its manifest) to `out` atomically.
pub fn write(out: &Path, tree: &Tree, force: bool) -> Result<WriteReport> {
    ensure_directory(out)?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = out
        .file_name()
        .with_context(|| format!("`{}` has no directory name", out.display()))?
        .to_string_lossy()
        .to_string();
    fs::create_dir_all(&parent).with_context(|| format!("failed to create `{}`", parent.display()))?;
    // Held until this function returns, whichever way.
    let _lock = lock(&parent.join(format!(".{name}.lock")), out)?;
    // Safe under the lock: no live run has a staging directory here. Every
    // run clears them, whether or not it writes anything.
    remove_stale_staging(&parent, &name);

    let full = with_manifest(tree);
    // Metadata only: files are read where they may be ours, and no further.
    let on_disk = scan(out)?;
    let old_manifest = old_manifest(out, &on_disk, force)?;
    let unchanged = unchanged(out, &full, &on_disk)?;
    let mut report = WriteReport::default();
    let Sorted {
        edited,
        foreign,
        mut keep,
    } = sort_on_disk(out, &full, &on_disk, &old_manifest, &unchanged, &mut report)?;
    if (!edited.is_empty() || !foreign.is_empty()) && !force {
        return Err(Conflicts {
            edited,
            foreign,
            out: out.to_path_buf(),
        }
        .into());
    }
    if force {
        // With --force, files we did not write but would overwrite are ours now.
        keep.retain(|p| !full.contains_key(p));
    }

    for path in full.keys() {
        if unchanged.contains(path) {
            report.unchanged += 1;
        } else {
            report.written.push(path.clone());
        }
    }
    report.kept = keep.clone();
    if report.written.is_empty() && report.removed.is_empty() {
        return Ok(report);
    }

    let staging = parent.join(format!(".{name}{STAGING_MARK}{}", std::process::id()));
    if let Err(error) = build_staging(&staging, out, &full, &unchanged, &keep) {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    // Fault injection for the atomicity test: stop as if killed right before
    // the swap. Not a user setting: only debug builds (the tests run one)
    // read it; a release binary ignores it.
    if cfg!(debug_assertions) && std::env::var_os("APPLIANCE_TEST_INTERRUPT_BEFORE_SWAP").is_some() {
        bail!("interrupted before the swap (APPLIANCE_TEST_INTERRUPT_BEFORE_SWAP)");
    }
    swap_in(&staging, out, &parent)?;
    Ok(report)
}

/// The manifest of the previous run: empty for a new or empty directory
/// (or with `--force`); a directory of files without one is not ours.
fn old_manifest(out: &Path, on_disk: &BTreeMap<String, OnDisk>, force: bool) -> Result<BTreeMap<String, String>> {
    Ok(match on_disk.get(MANIFEST) {
        Some(entry) => parse_manifest(&read_manifest(&out.join(MANIFEST), *entry)?),
        None if on_disk.is_empty() => BTreeMap::new(),
        None if force => BTreeMap::new(),
        None => bail!(
            "`{}` is not empty and has no `{MANIFEST}`, so appliance did not create it\n\
             hint: choose an empty or new directory with `--out`, or use `--force` to write into it",
            out.display()
        ),
    })
}

/// The files to be written that are on disk already, byte for byte.
fn unchanged(out: &Path, full: &Tree, on_disk: &BTreeMap<String, OnDisk>) -> Result<BTreeSet<String>> {
    let mut unchanged = BTreeSet::new();
    for (path, bytes) in full {
        if let Some(entry) = on_disk.get(path)
            && holds(&out.join(path), *entry, bytes)?
        {
            unchanged.insert(path.clone());
        }
    }
    Ok(unchanged)
}

/// What is on disk, besides the manifest, sorted by what the write does
/// with it (the files it removes go into `report.removed`).
struct Sorted {
    /// Ours, but changed by hand since.
    edited: Vec<String>,
    /// Not ours, and the write would overwrite them.
    foreign: Vec<String>,
    /// Not ours, and nothing overwrites them: kept as they are.
    keep: Vec<String>,
}

fn sort_on_disk(
    out: &Path,
    full: &Tree,
    on_disk: &BTreeMap<String, OnDisk>,
    old_manifest: &BTreeMap<String, String>,
    unchanged: &BTreeSet<String>,
    report: &mut WriteReport,
) -> Result<Sorted> {
    let mut sorted = Sorted {
        edited: Vec::new(),
        foreign: Vec::new(),
        keep: Vec::new(),
    };
    for (path, entry) in on_disk.iter().filter(|(p, _)| p.as_str() != MANIFEST) {
        let wanted = full.contains_key(path);
        match old_manifest.get(path) {
            Some(digest) => {
                // Ours: hand-edited unless its digest is still the manifest's.
                let untouched = || -> Result<bool> {
                    Ok(matches!(entry, OnDisk::File { .. }) && digest_file(&out.join(path))? == *digest)
                };
                if !unchanged.contains(path) && !untouched()? {
                    sorted.edited.push(path.clone());
                }
                if !wanted {
                    report.removed.push(path.clone());
                }
            }
            // Not ours: a conflict if we would overwrite it, else never read.
            None if wanted && !unchanged.contains(path) => sorted.foreign.push(path.clone()),
            None if !wanted => sorted.keep.push(path.clone()),
            None => {}
        }
    }
    Ok(sorted)
}

/// The output must be a directory or not exist yet. A symlink is refused
/// rather than followed: the swap would replace the link, not its target.
fn ensure_directory(out: &Path) -> Result<()> {
    match fs::symlink_metadata(out) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) => {
            let what = if meta.is_symlink() { "a symlink" } else { "a file" };
            bail!(
                "`{}` is not a directory (it is {what})\n\
                 hint: point `--out` at a directory, or at a path that does not exist yet",
                out.display()
            )
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("failed to inspect `{}`", out.display())),
    }
}

/// Takes the exclusive lock at `path`, waiting (and saying so) while another
/// run holds it. Held for as long as the returned file is open.
fn lock(path: &Path, out: &Path) -> Result<File> {
    use rustix::fs::{FlockOperation, flock};
    use rustix::io::Errno;
    // Not followed if a symlink: whoever planted one would have us create
    // or lock a file of their choosing.
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC).bits() as i32)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => bail!(
            "lock file `{}` is a symlink, which appliance does not follow\n\
             hint: remove it (`rm {}`); `appliance generate` creates the lock file itself",
            path.display(),
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("failed to open lock file `{}`", path.display())),
    };
    let locked = |op| loop {
        match flock(&file, op) {
            Err(Errno::INTR) => {}
            other => break other,
        }
    };
    match locked(FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => return Ok(file),
        Err(Errno::WOULDBLOCK) => {
            crate::common::term::eprintln(&format!(
                "waiting for another `appliance generate` writing `{}` (lock `{}`)",
                out.display(),
                path.display()
            ));
        }
        Err(e) => {
            return Err(std::io::Error::from(e)).with_context(|| format!("failed to lock `{}`", path.display()));
        }
    }
    locked(FlockOperation::LockExclusive)
        .map_err(std::io::Error::from)
        .with_context(|| format!("failed to lock `{}`", path.display()))?;
    Ok(file)
}

/// Above this many new files one `syncfs` is cheaper than an fsync each.
const SYNCFS_THRESHOLD: usize = 64;

fn build_staging(staging: &Path, out: &Path, full: &Tree, unchanged: &BTreeSet<String>, keep: &[String]) -> Result<()> {
    fs::create_dir_all(staging).with_context(|| format!("failed to create `{}`", staging.display()))?;
    let mut written = Vec::new();
    for (path, bytes) in full {
        let target = staging.join(path);
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
        }
        if unchanged.contains(path) && fs::hard_link(out.join(path), &target).is_ok() {
            // Unchanged: same inode, same mtime.
            continue;
        }
        fs::write(&target, bytes).with_context(|| format!("failed to write `{}`", target.display()))?;
        written.push(target);
    }
    for path in keep {
        let target = staging.join(path);
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
        }
        let source = out.join(path);
        if fs::hard_link(&source, &target).is_err() {
            fs::copy(&source, &target).with_context(|| format!("failed to keep `{}`", source.display()))?;
        }
    }
    // Every staged file and directory must be on disk before the swap makes
    // them the tree. Unchanged files are hard links to files already synced.
    let sync = |path: &Path| {
        File::open(path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("failed to sync `{}`", path.display()))
    };
    if written.len() > SYNCFS_THRESHOLD {
        let staged = File::open(staging).with_context(|| format!("failed to open `{}`", staging.display()))?;
        rustix::fs::syncfs(&staged).with_context(|| format!("failed to sync `{}`", staging.display()))?;
    } else {
        for path in &written {
            sync(path)?;
        }
        for entry in WalkDir::new(staging).contents_first(true) {
            let entry = entry?;
            if entry.file_type().is_dir() {
                sync(entry.path())?;
            }
        }
    }
    Ok(())
}

fn swap_in(staging: &Path, out: &Path, parent: &Path) -> Result<()> {
    if !out.exists() {
        fs::rename(staging, out).with_context(|| format!("failed to move the new tree to `{}`", out.display()))?;
    } else if exchange(staging, out).is_ok() {
        // `staging` now holds the previous tree.
        remove_old_tree(staging, out);
    } else {
        let mut old_name = staging.as_os_str().to_owned();
        old_name.push("-old");
        let old = PathBuf::from(old_name);
        fs::rename(out, &old).with_context(|| format!("failed to move `{}` aside", out.display()))?;
        fs::rename(staging, out).with_context(|| format!("failed to move the new tree to `{}`", out.display()))?;
        remove_old_tree(&old, out);
    }
    File::open(parent)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to sync `{}`", parent.display()))
}

/// Removes the previous tree once the new one is in place. A failure here
/// is a warning, not an error: the write itself succeeded, and the old tree
/// (named like a staging directory) goes with the next run's clean-up.
fn remove_old_tree(old: &Path, out: &Path) {
    if let Err(error) = fs::remove_dir_all(old) {
        crate::common::term::eprintln(&format!(
            "warning: the new tree is in `{}`, but the old one could not be removed from `{}`: {error}\n\
             hint: remove it by hand, or let the next `appliance generate` remove it",
            out.display(),
            old.display()
        ));
    }
}

/// Atomically exchanges two paths (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
}

/// Staging directories left by an interrupted run are ours to remove. Call
/// only while holding the lock: then each one belongs to a run that is gone.
fn remove_stale_staging(parent: &Path, name: &str) {
    let prefix = format!(".{name}{STAGING_MARK}");
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}
