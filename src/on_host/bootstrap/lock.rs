//! One bootstrap at a time per state directory: an exclusive `flock` on a
//! lock file. The kernel drops the lock when the holder dies, so a killed
//! run never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

/// Held for as long as this value lives.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the lock at `path`, waiting until `deadline` while another run
/// holds it; `on_wait` is called once when waiting starts.
pub fn acquire(path: &Path, deadline: Instant, on_wait: impl FnOnce()) -> Result<Lock> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to open lock file `{}`", path.display()))?;
    let mut on_wait = Some(on_wait);
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                return Ok(Lock {
                    _file: file,
                    path: path.to_path_buf(),
                });
            }
            Err(Errno::WOULDBLOCK) => {}
            Err(e) => {
                return Err(std::io::Error::from(e)).with_context(|| format!("failed to lock `{}`", path.display()));
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "another `appliance bootstrap` holds `{}`; gave up waiting\nhint: wait for it to finish, or raise `--timeout`",
                path.display()
            );
        }
        if let Some(f) = on_wait.take() {
            f();
        }
        sleep(Duration::from_millis(100));
    }
}
