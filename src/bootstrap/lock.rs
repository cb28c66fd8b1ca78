//! One bootstrap at a time per state directory: an exclusive `flock` on a
//! lock file. The kernel drops the lock when the holder dies, so a killed
//! run never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

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
        // SAFETY: the descriptor is open for the whole call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Lock {
                _file: file,
                path: path.to_path_buf(),
            });
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error).with_context(|| format!("failed to lock `{}`", path.display()));
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
