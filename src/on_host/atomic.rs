//! Replacing a file so that a reader, or a crash, sees the old content or
//! the new one, never a mix: the warden's state and grant files, the
//! backup's status.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to a new file beside `path` (with `mode` when given),
/// syncs it, renames it over `path` and syncs the directory.
pub fn replace(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("`{}` has no directory", path.display()))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("failed to create a temporary file in `{}`", dir.display()))?;
    if let Some(mode) = mode {
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("failed to set the mode of `{}`", temp.path().display()))?;
    }
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("failed to write `{}`", temp.path().display()))?;
    temp.persist(path)
        .with_context(|| format!("failed to replace `{}`", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("failed to sync directory `{}`", dir.display()))
}
