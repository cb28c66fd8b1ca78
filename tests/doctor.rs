//! `appliance doctor` against a stand-in for current gVisor (a script that
//! prints the listing in tests/fixtures, recorded from the runsc that
//! .ci/gobuild.sh builds) and against the real runsc of this machine.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use agent_appliance::generator::render::RUNSC_MINIMUM;
use agent_appliance::generator::render::runtimes::daemon_settings;
use agent_appliance::generator::runsc::{RunscVersion, probe_binary, release_date};
use agent_appliance::operator::commands::load;

use crate::support::{appliance, assert_contains, assert_lacks, built_runsc, require_tool, root, stderr, stdout};

/// A `runsc` that answers like a current release: version, the fixture's
/// flags on stderr (as Go's flag package does), and `drivers` for
/// `nvproxy list-supported-drivers` (empty: the subcommand fails).
fn fake_runsc(dir: &Path, drivers: &str) -> PathBuf {
    fake_runsc_release(dir, "release-20260525.0", "runsc-flags-current.txt", drivers)
}

/// A `runsc` that prints `release` as its version and the listing in
/// tests/fixtures/`flags_fixture`.
fn fake_runsc_release(dir: &Path, release: &str, flags_fixture: &str, drivers: &str) -> PathBuf {
    let path = dir.join("runsc");
    let fixture = root().join("tests/fixtures").join(flags_fixture);
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n  --version) echo 'runsc version {release}'; echo 'spec: 1.1.0' ;;\n  \
         flags) cat '{}' >&2 ;;\n  nvproxy) [ -n '{drivers}' ] || exit 1; for d in {drivers}; do echo $d; done ;;\n  \
         *) exit 2 ;;\nesac\n",
        fixture.display()
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `appliance doctor` of `host` in `spec` with the stand-in runsc of
/// `release` and `flags_fixture` (`fake_runsc_release`), the Docker
/// daemon's `docker_config` and no NVIDIA driver: its output and stdout.
fn doctor_of_release(
    spec: &Path,
    host: &str,
    release: &str,
    flags_fixture: &str,
    docker_config: &Path,
) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let runsc = fake_runsc_release(dir.path(), release, flags_fixture, "");
    let output = doctor(spec, host, &runsc, docker_config, &dir.path().join("none"));
    let out = stdout(&output);
    (output, out)
}

/// The hub's Docker daemon configuration, its runtimes spelled for
/// `version`, written to `dir`/daemon.json.
fn hub_daemon_config(dir: &Path, version: RunscVersion) -> PathBuf {
    let appliance = load(&default_spec()).unwrap();
    let settings = daemon_settings(&appliance.hosts["hub"], version).unwrap();
    let config = dir.join("daemon.json");
    fs::write(&config, serde_json::to_string(&settings).unwrap()).unwrap();
    config
}

/// Doctor's `out` took runsc's flags as spelled for `version`, found every
/// flag of the Docker-in-gVisor runtime (its packet-write flag spelled for
/// `version`), and the runtimes registered as generated.
#[track_caller]
fn assert_runtimes_spelled_for(out: &str, version: RunscVersion) {
    assert_contains(out, format!("(flags spelled as for {version})"));
    let packet = match version {
        RunscVersion::Current => "--allow-packet-socket-write",
        _ => "--TESTONLY-allow-packet-endpoint-write",
    };
    assert_contains(
        out,
        format!("ok   runtime `runsc-dind`: runsc supports --platform --overlay2 --net-raw {packet} --host-uds"),
    );
    assert_contains(out, "ok   docker runtimes: ");
}

fn nvidia_file(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join("nvidia-version");
    fs::write(
        &path,
        format!("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {version}  Release Build  (dvs-builder)\n"),
    )
    .unwrap();
    path
}

fn doctor(spec: &Path, host: &str, runsc: &Path, docker_config: &Path, nvidia: &Path) -> Output {
    appliance()
        .args(["doctor", "--spec"])
        .arg(spec)
        .args(["--host", host, "--runsc"])
        .arg(runsc)
        .arg("--docker-config")
        .arg(docker_config)
        .arg("--nvidia-version-file")
        .arg(nvidia)
        .args(["--kvm-device", "/nonexistent/kvm"])
        // No running sandbox here: the GPU-visibility check is a warning.
        .args(["--docker", "/nonexistent/docker"])
        .output()
        .expect("failed to start appliance")
}

/// A stand-in `docker` whose `exec ... nvidia-smi -L` lists `gpus` GPUs,
/// as nvidia-smi prints them.
fn fake_docker(dir: &Path, gpus: u32) -> PathBuf {
    let path = dir.join("docker");
    let mut script = String::from("#!/bin/sh\n[ \"$1 $2 $3 $4\" = 'exec ollama nvidia-smi -L' ] || exit 2\n");
    for i in 0..gpus {
        script.push_str(&format!("echo 'GPU {i}: NVIDIA L4 (UUID: GPU-{i:08})'\n"));
    }
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// On a running host, the doctor asks Ollama's sandbox which GPUs it sees
/// through nvproxy; fewer than the spec's is a failure, and the driver
/// check names the sandbox that uses it.
#[test]
fn the_inference_sandbox_must_see_every_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let runsc = fake_runsc(dir.path(), "580.65.06");
    let nvidia = nvidia_file(dir.path(), "580.65.06");
    let run = |docker: &Path| {
        appliance()
            .args(["doctor", "--spec"])
            .arg(default_spec())
            .args(["--host", "hub", "--runsc"])
            .arg(&runsc)
            .arg("--docker-config")
            .arg(hub_daemon_json())
            .arg("--nvidia-version-file")
            .arg(&nvidia)
            .args(["--kvm-device", "/nonexistent/kvm", "--docker"])
            .arg(docker)
            .output()
            .unwrap()
    };
    let all = run(&fake_docker(dir.path(), 8));
    let out = stdout(&all);
    assert!(all.status.success(), "{out}");
    assert_contains(&out, "ok   gpus in `ollama`: the sandbox sees 8 GPUs, as the spec says");
    assert_contains(&out, "used through nvproxy by sandbox `ollama` (runtime `runsc-gpu`)");
    let two = run(&fake_docker(dir.path(), 2));
    assert!(!two.status.success());
    assert_contains(
        stdout(&two),
        "FAIL gpus in `ollama`: the sandbox sees 2 GPUs, the spec says 8",
    );
    let none = stdout(&run(Path::new("/nonexistent/docker")));
    assert_contains(&none, "warn gpus in `ollama`: not checked: cannot run");
}

fn default_spec() -> PathBuf {
    root().join("appliance.toml")
}

fn hub_daemon_json() -> PathBuf {
    root().join("generated/hosts/hub/docker-daemon.json")
}

/// `appliance doctor` of the default spec's hub with its generated Docker
/// runtimes, a current gVisor whose nvproxy lists `drivers`, and the NVIDIA
/// driver `driver` loaded.
fn hub_doctor(drivers: &str, driver: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let runsc = fake_runsc(dir.path(), drivers);
    let nvidia = nvidia_file(dir.path(), driver);
    doctor(&default_spec(), "hub", &runsc, &hub_daemon_json(), &nvidia)
}

#[test]
fn current_gvisor_with_generated_runtimes_and_a_supported_driver_passes() {
    let output = hub_doctor("570.195.03 580.65.06", "580.65.06");
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert_contains(&out, "host `hub`: 7 sandboxes, 4 runtimes\n");
    assert_contains(&out, "ok   runsc: ");
    assert_contains(&out, "release-20260525.0 (flags spelled as for current gVisor)");
    assert_lacks(&out, "runsc release");
    assert_contains(&out, "ok   platform: runsc has the `systrap` platform");
    assert_contains(
        &out,
        "ok   runtime `runsc-dind`: runsc supports --platform --overlay2 --net-raw --allow-packet-socket-write --host-uds",
    );
    assert_contains(
        &out,
        "registers runsc, runsc-dind, runsc-gpu, runsc-uds-open as generated",
    );
    assert_contains(
        &out,
        "ok   nvidia driver: 580.65.06 is supported by nvproxy (from runsc nvproxy list-supported-drivers)",
    );
}

#[test]
fn an_unlisted_driver_fails_and_names_the_supported_ones() {
    // The driver of ray-project/ray#66161: one patch level off.
    let output = hub_doctor("570.195.03 580.65.06", "550.90.07");
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert_contains(&out, "FAIL nvidia driver: 550.90.07 is not on nvproxy's supported list");
    assert_contains(&out, "hint: pin the driver to one of: 570.195.03, 580.65.06");
    assert!(stderr(&output).contains("error: 1 check failed on host `hub`"));
}

#[test]
fn without_a_driver_list_from_runsc_the_built_in_one_is_used_with_a_warning() {
    let output = hub_doctor("", "590.48.01");
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    assert!(out.contains("warn nvidia driver: 590.48.01 is supported by nvproxy (from the list built into appliance"));
}

/// A host that overrides the driver with one nvproxy does not list fails
/// doctor: nixpkgs' `legacy_580` of 2026 (580.173.02) is not on the shipped
/// release-20260406.0's list (gVisor adds it in release-20260721.0).
#[test]
fn a_driver_off_the_shipped_list_fails() {
    let output = hub_doctor("", "580.173.02");
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL nvidia driver: 580.173.02 is not on nvproxy's supported list (from the list built into appliance (the shipped gVisor, release-20260406.0)"),
        "{out}"
    );
    assert_contains(&out, "580.126.09, 590.48.01");
}

#[test]
fn drifted_docker_runtimes_fail_and_extra_ones_warn() {
    let dir = tempfile::tempdir().unwrap();
    let runsc = fake_runsc(dir.path(), "580.65.06");
    let nvidia = nvidia_file(dir.path(), "580.65.06");
    let mut settings: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(hub_daemon_json()).unwrap()).unwrap();
    let runtimes = settings["runtimes"].as_object_mut().unwrap();
    runtimes.remove("runsc-dind");
    // The MAGI demo's permissive primary runtime.
    runtimes["runsc"]["runtimeArgs"] = serde_json::json!(["--net-raw=true", "--host-uds=all"]);
    runtimes.insert("docker-in-gvisor".into(), serde_json::json!({"path": "/usr/bin/runsc"}));
    let config = dir.path().join("daemon.json");
    fs::write(&config, settings.to_string()).unwrap();
    let output = doctor(&default_spec(), "hub", &runsc, &config, &nvidia);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert_contains(&out, "runtime `runsc-dind` is not registered");
    assert_contains(
        &out,
        "runtime `runsc` has runtimeArgs [\"--net-raw=true\",\"--host-uds=all\"], generated [\"--platform=systrap\",\"--overlay2=root:memory\"]",
    );
    assert_contains(
        &out,
        "warn docker runtimes: runtime `docker-in-gvisor` is registered but not generated",
    );
}

#[test]
fn a_missing_runsc_and_daemon_config_fail_with_hints() {
    let dir = tempfile::tempdir().unwrap();
    let nvidia = nvidia_file(dir.path(), "580.65.06");
    let output = doctor(
        &default_spec(),
        "hub",
        &dir.path().join("no-runsc"),
        &dir.path().join("no-daemon.json"),
        &nvidia,
    );
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert_contains(&out, "FAIL runsc: cannot run");
    assert_contains(&out, "hint: install gVisor's runsc");
    assert_contains(&out, "FAIL docker runtimes: cannot read");
}

/// Debian bookworm-backports' runsc 0.0~20240729.0 (what CI installs)
/// still spells packet writes `TESTONLY-allow-packet-endpoint-write`; doctor
/// must take the spelling from what `runsc flags` lists, not report the
/// Docker-in-gVisor runtime as unsupported.
#[test]
fn the_backports_runsc_is_spelled_from_its_flag_listing() {
    let dir = tempfile::tempdir().unwrap();
    let config = hub_daemon_config(dir.path(), RunscVersion::Release2024);
    let (_, out) = doctor_of_release(
        &default_spec(),
        "hub",
        "0.0~20240729.0",
        "runsc-flags-20240729.txt",
        &config,
    );
    assert_contains(&out, "0.0~20240729.0 (flags spelled as for runsc 20240729)");
    assert_runtimes_spelled_for(&out, RunscVersion::Release2024);
    assert_lacks(&out, "has no `--allow-packet-socket-write`");
    assert_contains(&out, "ok   platform: runsc has the `systrap` platform");
}

/// gVisor's `go` branch (what `go install gvisor.dev/gvisor/runsc@...`
/// builds, as .ci/gobuild.sh does) names a build between two releases as
/// `git describe` does: `release-20260406.0-43-g283af82a6` is release
/// 20260406.0 plus 43 commits, so it meets the Pi's minimum (20260316.0).
#[test]
fn a_go_branch_build_between_releases_meets_the_pis_minimum() {
    let describe = "release-20260406.0-43-g283af82a6";
    let config = root().join("generated/hosts/pi/docker-daemon.json");
    let (output, out) = doctor_of_release(&default_spec(), "pi", describe, "runsc-flags-current.txt", &config);
    assert_contains(
        &out,
        format!("runsc version {describe} (flags spelled as for current gVisor)"),
    );
    assert_lacks(&out, "runsc release");
    assert!(output.status.success(), "{out}");
}

/// A runsc built without the version ldflag (nixpkgs' recipe passes only
/// `-s -w`) says `VERSION_MISSING`: its release is unknown, which the doctor
/// says as such, not as "older than" the minimum; fatal only on a Pi.
#[test]
fn a_runsc_without_a_release_name_is_named_so() {
    let config = root().join("examples/minimal/generated/hosts/box/docker-daemon.json");
    let minimal = root().join("examples/minimal/appliance.toml");
    let (output, out) = doctor_of_release(&minimal, "box", "VERSION_MISSING", "runsc-flags-current.txt", &config);
    assert!(output.status.success(), "{out}");
    assert_contains(
        &out,
        "warn runsc release: `runsc --version` names no release (`runsc version VERSION_MISSING`)",
    );
    assert_contains(&out, "hint: use the appliance's gVisor");
    assert_lacks(&out, "older than");
    assert_contains(&out, "VERSION_MISSING (flags spelled as for current gVisor)");
    let (_, pi) = doctor_of_release(
        &default_spec(),
        "pi",
        "VERSION_MISSING",
        "runsc-flags-current.txt",
        &hub_daemon_json(),
    );
    assert_contains(pi, "FAIL runsc release: `runsc --version` names no release");
}

/// Both real runscs this project meets: the shipped release as
/// .ci/gobuild.sh builds it, and Debian's 0.0~20240729.0 (`/usr/bin/runsc`,
/// when installed). For each, the hub's runtimes spelled for it (the
/// Docker-in-gVisor runtime's packet-write flag is spelled differently)
/// are all in that binary's own `runsc flags`, and doctor agrees.
#[test]
fn doctor_knows_the_spellings_of_the_shipped_and_the_debian_runsc() {
    let mut binaries = Vec::new();
    if let Some(shipped) = built_runsc("appliance doctor against the shipped runsc") {
        binaries.push((shipped, RunscVersion::Current));
    }
    let debian = Path::new("/usr/bin/runsc");
    if debian.is_file() {
        binaries.push((debian.to_path_buf(), RunscVersion::Release2024));
    } else {
        eprintln!("\n!!! SKIPPED the Debian leg: no /usr/bin/runsc !!!\n");
    }
    for (runsc, expected) in binaries {
        let (version, _) = probe_binary(&runsc).unwrap();
        if runsc == debian && version != expected {
            eprintln!("\n!!! SKIPPED the Debian leg: /usr/bin/runsc is not 0.0~20240729 ({version}) !!!\n");
            continue;
        }
        assert_eq!(version, expected, "{}", runsc.display());
        let dir = tempfile::tempdir().unwrap();
        let config = hub_daemon_config(dir.path(), version);
        let output = doctor(&default_spec(), "hub", &runsc, &config, &dir.path().join("none"));
        let out = stdout(&output);
        assert_runtimes_spelled_for(&out, version);
        assert_lacks(&out, "FAIL runtime");
        assert_lacks(&out, "FAIL runsc");
    }
}

/// The host's real runsc (Debian's 0.0~20240729.0, or the shipped release
/// that .ci/gobuild.sh builds) runs the minimal example's runtimes as
/// spelled for it, and doctor agrees; only the older one is below the
/// release the modules require.
#[test]
fn the_installed_runsc_supports_the_minimal_spec() {
    let Some(runsc) = require_tool("runsc", "appliance doctor against a real runsc") else {
        return;
    };
    let (version, _) = probe_binary(&runsc).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = root().join("examples/minimal/appliance.toml");
    let appliance = load(&spec).unwrap();
    let mut host = appliance.hosts["box"].clone();
    if version == RunscVersion::Debian2022 {
        // No systrap in bookworm's own 2022 build.
        host.platform = agent_appliance::generator::spec::schema::Platform::Ptrace;
    }
    let settings = daemon_settings(&host, version).unwrap();
    let config = dir.path().join("daemon.json");
    fs::write(&config, serde_json::to_string(&settings).unwrap()).unwrap();
    let nvidia = dir.path().join("none");
    let spec = if version == RunscVersion::Debian2022 {
        ptrace_spec(dir.path())
    } else {
        spec
    };

    let output = doctor(&spec, "box", &runsc, &config, &nvidia);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}{}", stderr(&output));
    assert_contains(&out, format!("(flags spelled as for {version})"));
    assert_contains(&out, "ok   runtime `runsc`: runsc supports --platform --overlay2");
    let pi = stdout(&doctor(&default_spec(), "pi", &runsc, &hub_daemon_json(), &nvidia));
    if meets_the_minimum(&runsc) {
        // The release the images ship (.ci/gobuild.sh's build).
        assert_lacks(&out, "runsc release");
        assert_lacks(&pi, "runsc release");
    } else {
        // Debian's 20240729: a warning on x86_64, fatal on a Pi.
        assert_contains(&out, "warn runsc release: ");
        assert_contains(&out, "is older than 20260316.0");
        assert_contains(&pi, "FAIL runsc release: ");
    }
}

/// Whether `runsc --version` names a release at least `RUNSC_MINIMUM`.
fn meets_the_minimum(runsc: &Path) -> bool {
    let output = std::process::Command::new(runsc).arg("--version").output().unwrap();
    let minimum = release_date(RUNSC_MINIMUM).unwrap();
    release_date(&String::from_utf8_lossy(&output.stdout)).is_some_and(|date| date >= minimum)
}

/// The minimal example, moved to ptrace: what Debian's 2022 runsc can run.
fn ptrace_spec(dir: &Path) -> PathBuf {
    let text = fs::read_to_string(root().join("examples/minimal/appliance.toml")).unwrap();
    let text = text.replace("target = \"nixos\"", "target = \"nixos\"\nplatform = \"ptrace\"");
    let path = dir.join("appliance.toml");
    fs::write(&path, text).unwrap();
    path
}
