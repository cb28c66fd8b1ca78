//! Replacing a file so that a reader, or a crash, sees the old content or
//! the new one, never a mix: the warden's state and grant files, the
//! backup's status; and reading such a JSON file back.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

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

/// The JSON value in `path` (`what` it holds, as its errors name it), or
/// `None` when there is no such file.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>> {
    match fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("failed to read `{}`", path.display())),
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("`{}` is not {what}", path.display())),
    }
}
