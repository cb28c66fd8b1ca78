//! gVisor's own network stack (`--network=sandbox`, what every generated
//! runtime uses) with the shipped runsc, by scripts/netstack-repro.sh: a
//! container in a network namespace made for it fetches a page from a
//! second namespace over a veth. Debian's 0.0~20240729 refuses the same
//! setup on this kernel, which is why its leg substitutes `--network=host`.

use std::path::Path;
use std::process::Command;

use crate::support::{assert_contains, built_runsc, require_root, require_tools, root};

fn repro(runsc: &Path) -> (Option<i32>, String) {
    let output = Command::new(root().join("scripts/netstack-repro.sh"))
        .arg(runsc)
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

/// The tools the reproducer needs, and root (it makes network namespaces).
fn tools() -> bool {
    let found = require_tools(&["ip", "busybox", "python3"], "netstack reproducer");
    require_root("the netstack reproducer makes network namespaces") && found
}

#[test]
fn the_shipped_runscs_netstack_reaches_a_peer_namespace() {
    let Some(runsc) = built_runsc("gVisor's netstack with the shipped runsc") else {
        return;
    };
    if !tools() {
        return;
    }
    let (code, out) = repro(&runsc);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("10.77.0.0/24 dev "),
        "the netstack took the namespace's route: {out}"
    );
    assert!(
        out.contains("HTTP/1.1 200 OK") && out.contains("hello-from-peer"),
        "{out}"
    );
}

#[test]
fn debians_2024_runsc_refuses_its_netstack_here() {
    let debian = Path::new("/usr/bin/runsc");
    let version = Command::new(debian).arg("--version").output();
    let Ok(version) = version else {
        eprintln!("\n!!! SKIPPED: no /usr/bin/runsc (Debian's) !!!\n");
        return;
    };
    if !String::from_utf8_lossy(&version.stdout).contains("0.0~20240729") || !tools() {
        eprintln!("\n!!! SKIPPED: /usr/bin/runsc is not Debian's 0.0~20240729 !!!\n");
        return;
    }
    let (code, out) = repro(debian);
    assert_ne!(code, Some(0), "{out}");
    assert_contains(&out, "cannot run with network enabled in root network namespace");
}
