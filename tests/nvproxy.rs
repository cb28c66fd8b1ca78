//! The nvproxy driver list the appliance uses (`NVPROXY_DRIVERS`: the
//! generated GPU hosts assert it, `appliance doctor` falls back to it) is the
//! shipped gVisor's own: what `runsc nvproxy list-supported-drivers` of the
//! runsc .ci/gobuild.sh builds prints, and what the Go module's source
//! registers. nvproxy needs an exact driver match, so a stale list either
//! refuses a driver that works or lets a host boot into
//! `cannot read client sync file`.

use std::path::PathBuf;
use std::process::Command;

use agent_appliance::generator::render::NVPROXY_DRIVERS;

use crate::support::{built_runsc, gvisor_go_module, in_ci};

#[test]
fn the_driver_list_is_the_shipped_runscs() {
    let Some(runsc) = built_runsc("nvproxy's supported drivers of the shipped gVisor") else {
        return;
    };
    let (_, _, describe) = gvisor_go_module();
    let version = Command::new(&runsc).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.lines().next().unwrap_or("").ends_with(&describe),
        "{} is not the pinned build {describe}: {version}\nhint: rerun .ci/gobuild.sh",
        runsc.display()
    );
    let output = Command::new(&runsc)
        .args(["nvproxy", "list-supported-drivers"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed, NVPROXY_DRIVERS,
        "NVPROXY_DRIVERS in src/generator/render/host.rs differs from `runsc nvproxy list-supported-drivers` of {describe}"
    );
}

/// The Go module's `pkg/sentry/devices/nvproxy/version.go` (downloaded into
/// the module cache by .ci/gobuild.sh) registers each driver with
/// `vMAJ_MIN_PATCH := addDriverABI(MAJ, MIN, PATCH, ...)` (or `_ = ...` for
/// a version no later one builds on).
#[test]
fn the_driver_list_is_the_go_modules_source() {
    let Some(file) = module_file("pkg/sentry/devices/nvproxy/version.go") else {
        return;
    };
    let text = std::fs::read_to_string(&file).unwrap();
    let registered: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_once("= addDriverABI(").map(|(_, args)| args))
        .map(|args| {
            let numbers: Vec<u32> = args
                .split(',')
                .take(3)
                .map(|n| n.trim().parse().expect("a version number"))
                .collect();
            format!("{}.{}.{:02}", numbers[0], numbers[1], numbers[2])
        })
        .collect();
    assert!(registered.len() > 10, "parsed too few drivers from {}", file.display());
    assert_eq!(
        registered,
        NVPROXY_DRIVERS,
        "NVPROXY_DRIVERS differs from {}",
        file.display()
    );
}

/// A file of the pinned gVisor module in the Go module cache, or a loud
/// skip (a failure in CI, where .ci/gobuild.sh has downloaded it).
fn module_file(path: &str) -> Option<PathBuf> {
    let (module, version, _) = gvisor_go_module();
    // .ci/gobuild.sh falls back to /usr/local/go/bin/go as well.
    let cache = ["go", "/usr/local/go/bin/go"].iter().find_map(|go| {
        Command::new(go)
            .args(["env", "GOMODCACHE"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|dir| !dir.is_empty())
    });
    let file = cache.map(|dir| PathBuf::from(dir).join(format!("{module}@{version}")).join(path));
    match file {
        Some(file) if file.is_file() => Some(file),
        other => {
            let shown = other.map_or_else(|| "(no `go env GOMODCACHE`)".to_string(), |f| f.display().to_string());
            assert!(
                !in_ci(),
                "{shown} is required in CI but missing\nhint: run .ci/gobuild.sh"
            );
            eprintln!("\n!!! SKIPPED: {shown} is missing; run .ci/gobuild.sh; CI=true makes this a failure !!!\n");
            None
        }
    }
}
