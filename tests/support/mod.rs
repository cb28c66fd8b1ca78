//! Helpers shared by both integration test binaries (`main`, tests/main.rs,
//! and `rehearsal`, tests/rehearsal/main.rs): the repository, the
//! `appliance` binary, tools and installs a test requires, and one module per
//! thing a test starts for itself.

#![allow(dead_code)]

pub mod dockerd;
pub mod lab;
pub mod netns;
pub mod ports;
pub mod squid;
pub mod synapse;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `appliance` binary built for this test run.
pub fn appliance() -> Command {
    Command::new(env!("CARGO_BIN_EXE_appliance"))
}

/// Runs `appliance` with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    appliance()
        .args(args)
        .current_dir(dir)
        .env_remove("APPLIANCE_SPEC")
        .output()
        .expect("failed to start appliance")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Fails unless `output` is a success, showing `what` ran, its status
/// and both of its outputs.
#[track_caller]
pub fn assert_succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Fails unless `text` contains `needle`, showing both.
#[track_caller]
pub fn assert_contains(text: impl AsRef<str>, needle: impl AsRef<str>) {
    let (text, needle) = (text.as_ref(), needle.as_ref());
    assert!(text.contains(needle), "`{needle}` is not in:\n{text}");
}

/// Fails if `text` contains `needle`, showing both.
#[track_caller]
pub fn assert_lacks(text: impl AsRef<str>, needle: impl AsRef<str>) {
    let (text, needle) = (text.as_ref(), needle.as_ref());
    assert!(!text.contains(needle), "`{needle}` should not be in:\n{text}");
}

/// The first line `child` writes to its piped stdout (with its newline),
/// e.g. the port a server it started listens on. The rest of the pipe
/// is dropped: the child's later writes get EPIPE.
pub fn first_line_of(child: &mut std::process::Child) -> String {
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .unwrap();
    line
}

/// Stops `child`: `signal` (a graceful stop), up to `within` for it to
/// exit, then SIGKILL; reaped either way.
pub fn stop_child(child: &mut std::process::Child, signal: rustix::process::Signal, within: std::time::Duration) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
        let _ = rustix::process::kill_process(pid, signal);
    }
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `restic ARGS` on the repository `repository` with the password in
/// `password_file`, as the backup unit's environment sets them.
pub fn restic(repository: &Path, password_file: &Path, args: &[&str]) -> Output {
    Command::new("restic")
        .args(args)
        .env("RESTIC_REPOSITORY", repository)
        .env("RESTIC_PASSWORD_FILE", password_file)
        .output()
        .expect("failed to run restic")
}

/// The end of the upgrade tests' stand-ins for the NixOS steps
/// (`--system-program`), after each one's `run`, `generation`, `switch` and
/// `diff`: the steps they take alike. `switch-to N` runs generation N;
/// `stop` and `start` take `docker-<name>.service` units and stop or start
/// those containers; `dry-activate` says casper's unit would restart.
pub const STANDIN_SYSTEM_STEPS: &str = r#"  switch-to) echo "$2" > "$dir/generation"; run "$2" ;;
  stop|start)
    verb=$1; shift
    for unit in "$@"; do
      case "$unit" in docker-*.service) name=${unit#docker-}; "$docker" "$verb" "${name%.service}" >/dev/null ;; esac
    done ;;
  dry-activate) echo "would restart the following units: docker-casper.service" ;;
  *) exit 2 ;;
esac
"#;

/// A valid one-agent spec (the starter's shape): host `box`, admin
/// `owner`, agent `helper` in room `lobby`. Tests change one thing in it.
pub const SOLO_SPEC: &str = r#"
[appliance]
name = "solo"

[hosts.box]
target = "nixos"

[matrix]
host = "box"
server-name = "solo.internal"
admins = ["owner"]

[inference]
host = "box"
models = ["qwen3:4b"]

[agents.helper]
kind = "picoclaw"
host = "box"

[rooms.lobby]
members = ["helper", "@owner"]
"#;

/// `SOLO_SPEC` with federation on, which a lint flags.
pub fn federated_solo_spec() -> String {
    SOLO_SPEC.replacen("admins = [\"owner\"]", "admins = [\"owner\"]\nfederation = true", 1)
}

/// A host's backup config (`backup.json`) with every file of it in `dir`:
/// repository `repo`, password `password`, staging `backup/staging`,
/// status `backup/status.json`, volumes under `volumes`; no volumes, paths
/// or units to stop. Tests set what they are about on it.
pub fn backup_config(dir: &Path) -> serde_json::Value {
    let at = |relative: &str| dir.join(relative).display().to_string();
    serde_json::json!({
        "schema": agent_appliance::schema::backup::CONFIG_SCHEMA,
        "appliance": "magi", "repository": at("repo"), "password_file": at("password"),
        "staging_dir": at("backup/staging"), "status_file": at("backup/status.json"),
        "unit": "restic-backups-appliance.service", "volume_root": at("volumes"),
        "volumes": [], "paths": [], "units": [],
    })
}

/// The strings of a JSON array (the test fails on anything else).
pub fn json_strings(value: &serde_json::Value) -> Vec<&str> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
}

/// The string `field` of each object in the JSON array `value`, collected
/// (the test fails on anything else).
pub fn json_field_strings<C: FromIterator<String>>(value: &serde_json::Value, field: &str) -> C {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap().to_string())
        .collect()
}

/// Whether tests run in CI, where a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Finds a tool on PATH. In CI a missing tool fails the test; elsewhere the
/// test is skipped, loudly.
pub fn require_tool(name: &str, why: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(!in_ci(), "`{name}` is required in CI ({why}) but is not installed");
        eprintln!("\n!!! SKIPPED: `{name}` is not installed ({why}); CI=true makes this a failure !!!\n");
    }
    found
}

/// Every tool of `tools` on PATH, each missing one reported (not only the
/// first), as `require_tool` does.
pub fn require_tools(tools: &[&str], why: &str) -> bool {
    let found: Vec<bool> = tools.iter().map(|t| require_tool(t, why).is_some()).collect();
    !found.contains(&false)
}

/// Whether this runs as root, which `what` needs (e.g. "the egress test
/// makes network namespaces"). In CI not being root fails the test;
/// elsewhere the test is skipped, loudly.
pub fn require_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(!in_ci(), "{what} and must run as root in CI");
    eprintln!("\n!!! SKIPPED: {what} and needs root; CI=true makes this a failure !!!\n");
    false
}

/// The runsc the appliance ships, as .ci/gobuild.sh builds it from the Go
/// module nix/sources.json pins (`.ci/go/bin/runsc`). In CI a missing build
/// fails the test; elsewhere the test is skipped, loudly.
pub fn built_runsc(why: &str) -> Option<PathBuf> {
    let path = root().join(".ci/go/bin/runsc");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "`{}` is required in CI ({why}) but is not built\nhint: run `.ci/gobuild.sh`",
        path.display()
    );
    eprintln!(
        "\n!!! SKIPPED: `{}` is not built ({why}); run `.ci/gobuild.sh`; CI=true makes this a failure !!!\n",
        path.display()
    );
    None
}

/// The pinned `gvisor.goModule` of nix/sources.json: (module path, version,
/// `git describe` name that `runsc --version` prints).
pub fn gvisor_go_module() -> (String, String, String) {
    let text = std::fs::read_to_string(root().join("nix/sources.json")).unwrap();
    let sources: serde_json::Value = serde_json::from_str(&text).unwrap();
    let module = &sources["gvisor"]["goModule"];
    let field = |name: &str| module[name].as_str().unwrap().to_string();
    (field("path"), field("version"), field("describe"))
}

/// A tool installed into a directory rather than on PATH (see `.ci/agents.sh`):
/// `$var` if set, else `default` under the repository root. `probe` is a
/// file inside it that proves the install. In CI a missing install fails the
/// test; elsewhere the test is skipped, loudly.
pub fn require_install(var: &str, default: &str, probe: &str, why: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var).map_or_else(|| root().join(default), PathBuf::from);
    if dir.join(probe).is_file() {
        return Some(dir);
    }
    assert!(
        !in_ci(),
        "`{}` is required in CI ({why}) but is not installed\nhint: run `.ci/agents.sh`, or set `{var}`",
        dir.join(probe).display()
    );
    eprintln!(
        "\n!!! SKIPPED: `{}` is not installed ({why}); run `.ci/agents.sh` or set `{var}`; CI=true makes this a failure !!!\n",
        dir.join(probe).display()
    );
    None
}

/// Debian's `nix-instantiate` (package `nix-bin`), or a loud skip / CI failure.
pub fn nix_instantiate() -> Option<PathBuf> {
    require_tool(
        "nix-instantiate",
        "Debian package `nix-bin`: parses and evaluates the hand-written Nix, the generated values through nix/generated.nix and the flake with stub inputs",
    )
}

/// A Nix expression over a stub nixpkgs: `stub` is the file `stub_nix`
/// (written to the directory returned with the expression), `root` the
/// repository, then `bindings`; its value is `body`.
pub fn with_stub(stub_nix: &str, bindings: &str, body: &str) -> (tempfile::TempDir, String) {
    let stub = tempfile::tempdir().unwrap();
    std::fs::write(stub.path().join("stub.nix"), stub_nix).unwrap();
    let expression = format!(
        "let\n  stub = import {}/stub.nix;\n  root = {};\n{bindings}\nin\n{body}\n",
        stub.path().display(),
        root().display(),
    );
    (stub, expression)
}

/// Runs `nix-instantiate` with a throwaway store; returns (success, stdout, stderr).
pub fn run_nix(args: &[&str]) -> (bool, String, String) {
    let nix_instantiate = nix_instantiate().expect("checked by the caller");
    let store = tempfile::tempdir().unwrap();
    let output = Command::new(nix_instantiate)
        .args(args)
        .env("NIX_STORE_DIR", store.path().join("store"))
        .env("NIX_STATE_DIR", store.path().join("state"))
        .env("NIX_LOG_DIR", store.path().join("log"))
        .env("HOME", store.path())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Evaluates a Nix expression strictly to JSON.
pub fn eval_json(expression: &str) -> serde_json::Value {
    let (ok, stdout, stderr) = run_nix(&["--eval", "--strict", "--json", "--read-write-mode", "-E", expression]);
    assert!(ok, "{expression}\n{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// An agent whose code waits for approval mounts the warden's broker
/// socket (`/run/appliance/approval/<exec>`); a test that does not run the
/// broker (the rehearsal, tests/sandbox.rs; docs/rehearsal.md), so the agent mounts its code
/// sandbox's own socket directory, as with `approve = []`. The broker is
/// proven on a real dockerd and Synapse in tests/warden.rs.
pub fn without_approval_broker(
    mut sandbox: agent_appliance::generator::model::Sandbox,
) -> agent_appliance::generator::model::Sandbox {
    use agent_appliance::generator::model::{APPROVAL_SOCKET_DIR, BindSource, SOCKET_DIR};
    for bind in &mut sandbox.binds {
        if let BindSource::Host(path) = &bind.source
            && let Some(exec) = path.strip_prefix(&format!("{APPROVAL_SOCKET_DIR}/"))
        {
            bind.source = BindSource::Host(format!("{SOCKET_DIR}/{exec}"));
        }
    }
    sandbox
}
