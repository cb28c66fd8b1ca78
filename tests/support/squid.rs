//! The generated squid configuration (egress-proxy.conf) made runnable by
//! a test: its pid file, logs and core dumps under a directory of the
//! test's own, and Debian's `proxy` user (NixOS' is `squid`). Every other
//! line, every ACL among them, stays as generated.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// `dir`, made and writable by squid's user (the tests run as root).
pub fn make_dir(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
}

/// `line` of the generated configuration with this machine's paths and
/// user, or `None` when the line needs no change.
pub fn with_test_paths(line: &str, dir: &Path) -> Option<String> {
    Some(match line.split_whitespace().next() {
        Some("pid_filename") => format!("pid_filename {}/squid.pid", dir.display()),
        Some("cache_effective_user") => "cache_effective_user proxy".into(),
        Some("cache_log") => format!("cache_log {}/cache.log", dir.display()),
        Some("access_log") => format!("access_log stdio:{}/access.log", dir.display()),
        Some("coredump_dir") => format!("coredump_dir {}", dir.display()),
        _ => return None,
    })
}

/// `squid -k parse -f conf` through `squid` (`squid`, or the same run in a
/// network namespace): the configuration parses, or the test fails with
/// squid's complaint.
#[track_caller]
pub fn assert_parses(mut squid: Command, conf: &Path) {
    let output = squid.args(["-k", "parse", "-f"]).arg(conf).output().unwrap();
    super::assert_succeeded(&format!("squid -k parse -f {}", conf.display()), &output);
}
