//! `appliance upgrade` (docs/upgrade.md) driven whole, with a real
//! Synapse after a real bootstrap, a private dockerd running the agent's
//! sandbox, and real restic with a local repository.
//!
//! Two stand-ins, named so everywhere:
//! - the **system switch**: no NixOS here, so `--system-program` is
//!   `STANDIN_SYSTEM` below, whose generation N runs the image the test
//!   named for N as casper's container (and whose switch "migrates" the
//!   agent's state first, as a new agent version would); the real NixOS
//!   steps are the VM test's (nix/checks/upgrade.nix, real Nix only);
//! - the **agent's process**: a thread answering mentions as casper's
//!   account while casper's container runs (no agent runs here; the real
//!   agents answering are the rehearsal's to prove).
//!
//! Proven: `--dry-run` changes nothing; an upgrade to an image that exits
//! at start fails the gate and is rolled back, system and state (what the
//! switch wrote is gone, what was before is back), said in the terminal,
//! the ops room and the audit trail, and the agent answers again; an
//! upgrade to a good image keeps the new system and the new state.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent_appliance::on_host::bootstrap::client::{Client, segment};
use serde_json::{Value, json};

use crate::support::dockerd::{DOCKER, Dockerd};
use crate::support::ports::free_port;
use crate::support::synapse::{Synapse, room_events, venv};
use crate::support::{STANDIN_SYSTEM_STEPS, appliance, assert_succeeded, in_ci, require_tool, root, stderr, stdout};

const VOLUME: &str = "appliance-casper-state";
const AGENT: &str = "@casper:magi";
const ADMIN: &str = "@gendo:magi";

/// A stand-in for NixOS' system steps (`--system-program`), up to the
/// steps all stand-ins take alike (`STANDIN_SYSTEM_STEPS`): generation N
/// runs the image named in `$STANDIN_DIR/images/N` as casper's container.
const STANDIN_SYSTEM: &str = r#"#!/bin/sh
# Stand-in for the NixOS system switch (tests/upgrade.rs).
set -e
dir="$STANDIN_DIR"
docker="$STANDIN_DOCKER"
image() { cat "$dir/images/$1"; }
run() {
  "$docker" rm -f casper >/dev/null 2>&1 || true
  "$docker" run -d --name casper --network none -v appliance-casper-state:/data "$(image "$1")" >/dev/null
}
current=$(cat "$dir/generation")
case "$1" in
  generation) echo "$current" ;;
  switch)
    # Like `nixos-rebuild switch`: the configured system (the newest
    # image named), again if it already runs.
    next=$(ls "$dir/images" | sort -n | tail -1)
    # The new agent version migrates its state before it starts.
    "$docker" run --rm --network none -v appliance-casper-state:/data "$(image 1)" \
      /bin/busybox sh -c "echo migrated to $next > /data/schema"
    echo "$next" > "$dir/generation"
    run "$next" ;;
  diff) echo "casper-image: $(image "$current") -> $(image "$(ls "$dir/images" | sort -n | tail -1)")" ;;
"#;

/// A private dockerd (no networking) with three images: two good agents
/// and one that exits at start.
fn private_docker() -> Option<Dockerd> {
    let why = "the upgrade's health gate and rollback";
    let tools = ["dockerd", "busybox", "unshare", "tar", "timeout", "restic"].map(|t| require_tool(t, why).is_some());
    if tools.contains(&false) {
        return None;
    }
    if !rustix::process::geteuid().is_root() {
        assert!(!in_ci(), "{why} start a dockerd and must run as root in CI");
        eprintln!("\n!!! SKIPPED: {why} need root; CI=true makes this a failure !!!\n");
        return None;
    }
    let wrapper = ["unshare", "--net", "--"].map(String::from);
    let daemon =
        Dockerd::start_with(&json!({}), &wrapper).unwrap_or_else(|log| panic!("dockerd did not start:\n{log}"));
    let rootfs = tempfile::tempdir().unwrap();
    fs::create_dir(rootfs.path().join("bin")).unwrap();
    fs::copy(require_tool("busybox", why).unwrap(), rootfs.path().join("bin/busybox")).unwrap();
    for (tag, cmd) in [
        ("v1", r#"["/bin/busybox","sleep","100000"]"#),
        ("v2", r#"["/bin/busybox","sleep","200000"]"#),
        ("exits", r#"["/bin/busybox","false"]"#),
    ] {
        let tar = std::process::Command::new("tar")
            .arg("-C")
            .arg(rootfs.path())
            .args(["-c", "."])
            .output()
            .unwrap();
        let mut import = daemon
            .command()
            .args(["import", "--change", &format!("CMD {cmd}"), "-", &image(tag)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        assert_succeeded("docker import", &import.wait_with_output().unwrap());
    }
    Some(daemon)
}

fn image(tag: &str) -> String {
    format!("appliance-upgrade-test:{tag}")
}

/// The Matrix host: the generated plan with only casper's sandbox on this
/// host, its secrets, Synapse, the bootstrap.
struct Host {
    temp: tempfile::TempDir,
    url: String,
    plan: PathBuf,
    client: Client,
}

impl Host {
    fn start(venv: &Path) -> (Host, Synapse) {
        let temp = tempfile::tempdir().unwrap();
        let mut plan: Value =
            serde_json::from_str(&fs::read_to_string(root().join("generated/bootstrap/plan.json")).unwrap()).unwrap();
        plan["sandboxes"] = json!(
            plan["sandboxes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["name"] == "casper")
                .cloned()
                .collect::<Vec<_>>()
        );
        let plan_path = temp.path().join("plan.json");
        fs::write(&plan_path, plan.to_string()).unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let state = temp.path().join("state");
        let bootstrap = |extra: &[&str]| {
            let out = appliance()
                .arg("bootstrap")
                .arg("--plan")
                .arg(&plan_path)
                .arg("--state-dir")
                .arg(&state)
                .args(["--homeserver", &url])
                .args(extra)
                .output()
                .unwrap();
            assert_succeeded("appliance bootstrap", &out);
        };
        bootstrap(&["--secrets-only"]);
        let mut synapse = Synapse::start(venv, &temp.path().join("synapse"), &state, port);
        synapse.wait_ready();
        bootstrap(&[]);
        let client = Client::new(&url, Instant::now() + Duration::from_secs(600), Duration::from_secs(60));
        let host = Host {
            temp,
            url,
            plan: plan_path,
            client,
        };
        (host, synapse)
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.temp.path().join(relative)
    }

    /// restic on this host's repository (`repo`, its password in `password`).
    fn restic(&self, args: &[&str]) -> Output {
        crate::support::restic(&self.path("repo"), &self.path("password"), args)
    }

    fn secret(&self, relative: &str) -> String {
        fs::read_to_string(self.path("state").join(relative))
            .unwrap()
            .trim()
            .to_string()
    }

    fn appliance_token(&self) -> String {
        self.secret("secrets/_host/bootstrap/matrix-token")
    }

    fn room_id(&self, alias: &str) -> String {
        let reply = self
            .client
            .get(
                &format!("/_matrix/client/v3/directory/room/{}", segment(alias)),
                Some(&self.appliance_token()),
            )
            .unwrap();
        reply.str("room_id").unwrap().to_string()
    }

    /// The bodies of the ops room's messages, oldest first.
    fn ops_room(&self) -> Vec<String> {
        let ops = self.room_id("#appliance_ops:magi");
        room_events(&self.client, &self.appliance_token(), &ops, 100)
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_string))
            .collect()
    }
}

/// The stand-in for casper's process: as casper's account, it answers
/// every mention of casper by the admin while casper's container runs.
fn stand_in_agent(host: &Host, daemon: &Dockerd, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    let token = host.secret("secrets/casper/matrix-token");
    let client = Client::new(
        &host.url,
        Instant::now() + Duration::from_secs(900),
        Duration::from_secs(30),
    );
    let joined = client
        .post(
            &format!("/_matrix/client/v3/join/{}", segment("#magi:magi")),
            Some(&token),
            &json!({}),
        )
        .unwrap();
    assert!(joined.ok(), "{}", joined.describe());
    let docker_host = format!("unix://{}", daemon.socket.display());
    std::thread::spawn(move || {
        let running = || {
            let out = std::process::Command::new(DOCKER)
                .args(["inspect", "-f", "{{.State.Running}}", "casper"])
                .env("DOCKER_HOST", &docker_host)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim() == "true"
        };
        let mut since: Option<String> = None;
        let mut answered = 0;
        while !stop.load(Ordering::Relaxed) {
            let path = match &since {
                Some(s) => format!("/_matrix/client/v3/sync?timeout=1000&since={}", segment(s)),
                None => "/_matrix/client/v3/sync?timeout=0".to_string(),
            };
            let Ok(reply) = client.get(&path, Some(&token)) else {
                continue;
            };
            let first = since.is_none();
            since = reply.str("next_batch").map(str::to_string);
            if first {
                continue;
            }
            for (room, joined) in reply.body["rooms"]["join"].as_object().into_iter().flatten() {
                for event in joined["timeline"]["events"].as_array().into_iter().flatten() {
                    let mentioned = event["content"]["m.mentions"]["user_ids"]
                        .as_array()
                        .is_some_and(|ids| ids.iter().any(|id| id == AGENT));
                    if event["sender"] == ADMIN && mentioned && running() {
                        answered += 1;
                        let _ = client.put(
                            &format!(
                                "/_matrix/client/v3/rooms/{}/send/m.room.message/standin-{answered}",
                                segment(room)
                            ),
                            Some(&token),
                            &json!({ "msgtype": "m.text", "body": "ok" }),
                        );
                    }
                }
            }
        }
        answered
    })
}

struct Run<'a> {
    host: &'a Host,
    daemon: &'a Dockerd,
    config: PathBuf,
    standin: PathBuf,
}

impl Run<'_> {
    fn upgrade(&self, extra: &[&str]) -> Output {
        self.upgrade_command(extra).output().unwrap()
    }

    /// `appliance upgrade` of this run's host, with `extra` arguments; it
    /// fails (exit 1) and says each of `lines` on stderr.
    fn upgrade_fails_saying(&self, extra: &[&str], lines: &[&str]) {
        let out = self.upgrade(extra);
        assert_eq!(out.status.code(), Some(1), "{}\n{}", stdout(&out), stderr(&out));
        let said = stderr(&out);
        for line in lines {
            assert!(said.contains(line), "the upgrade did not say {line:?}:\n{said}");
        }
    }

    /// `appliance upgrade` with `extra` arguments fails saying each of
    /// `lines`, rolls the system back to `generation` and says so, and the
    /// stand-in system runs that generation (casper from its image
    /// `v<generation>`) again.
    fn upgrade_is_rolled_back_to(&self, generation: &str, extra: &[&str], lines: &[&str]) {
        let rolling_back = format!("rolling back: the system to generation {generation}");
        let healthy = "After the rollback: healthy, every agent answers";
        self.upgrade_fails_saying(extra, &[lines, &[rolling_back.as_str(), healthy]].concat());
        self.assert_runs(generation, &format!("v{generation}"));
    }

    /// The command line of `appliance upgrade` of this run's host, with
    /// `extra` arguments.
    fn upgrade_command(&self, extra: &[&str]) -> std::process::Command {
        let mut command = appliance();
        command
            .arg("upgrade")
            .arg("--plan")
            .arg(&self.host.plan)
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.host.path("state"))
            .args(["--homeserver", &self.host.url, "--docker", DOCKER])
            .arg("--system-program")
            .arg(self.standin.join("system"))
            .args(extra)
            .env("DOCKER_HOST", format!("unix://{}", self.daemon.socket.display()))
            .env("STANDIN_DIR", &self.standin)
            .env("STANDIN_DOCKER", DOCKER);
        command
    }

    /// The stand-in system is at `generation`, casper's container from the
    /// image tagged `tag`.
    fn assert_runs(&self, generation: &str, tag: &str) {
        assert_eq!(self.generation(), generation);
        assert_eq!(self.container("{{.Config.Image}}"), image(tag));
    }

    fn generation(&self) -> String {
        fs::read_to_string(self.standin.join("generation"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn in_volume(&self, line: &str) -> String {
        let volume = format!("{VOLUME}:/data");
        let out = self.daemon.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &volume,
            &image("v1"),
            "/bin/busybox",
            "sh",
            "-c",
            line,
        ]);
        assert_succeeded(line, &out);
        stdout(&out)
    }

    fn container(&self, format: &str) -> String {
        let out = self.daemon.docker(&["inspect", "-f", format, "casper"]);
        assert_succeeded("docker inspect", &out);
        stdout(&out).trim().to_string()
    }

    fn snapshots(&self) -> Vec<Value> {
        let out = self.host.restic(&["snapshots", "--json"]);
        assert_succeeded("restic snapshots", &out);
        serde_json::from_slice::<Option<Vec<Value>>>(&out.stdout)
            .unwrap()
            .unwrap_or_default()
    }
}

/// The backup config of this host: casper's volume, the warden's
/// directory (which a rollback keeps), the units a restore stops.
fn backup_config(host: &Host, daemon: &Dockerd) -> PathBuf {
    fs::write(host.path("password"), "correct horse battery staple\n").unwrap();
    let mut config = crate::support::backup_config(host.temp.path());
    config["volume_root"] = json!(daemon.dir().join("data/volumes").display().to_string());
    config["volumes"] = json!([{ "name": VOLUME, "agent": "casper" }]);
    let warden = host.path("state/warden").display().to_string();
    config["paths"] = json!([{ "name": "warden", "path": warden, "what": "the warden's state and audit trail" }]);
    config["units"] = json!(["docker-casper.service"]);
    let path = host.path("backup.json");
    fs::write(&path, config.to_string()).unwrap();
    let out = host.restic(&["init"]);
    assert_succeeded("restic init", &out);
    path
}

#[test]
fn a_failing_upgrade_rolls_back_system_and_state_and_a_good_one_stays() {
    let Some(venv) = venv() else { return };
    let Some(daemon) = private_docker() else { return };
    let (host, _synapse) = Host::start(&venv);
    let standin = host.path("standin");
    fs::create_dir_all(standin.join("images")).unwrap();
    fs::write(
        standin.join("system"),
        format!("{STANDIN_SYSTEM}{STANDIN_SYSTEM_STEPS}"),
    )
    .unwrap();
    fs::set_permissions(
        standin.join("system"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::write(standin.join("images/1"), image("v1")).unwrap();
    fs::write(standin.join("images/2"), image("exits")).unwrap();
    fs::write(standin.join("generation"), "1\n").unwrap();
    let run = Run {
        host: &host,
        daemon: &daemon,
        config: backup_config(&host, &daemon),
        standin,
    };
    // Generation 1 runs, and the agent knows a fact.
    daemon.start_offline("casper", &["-v", &format!("{VOLUME}:/data"), &image("v1")]);
    run.in_volume("echo 'the reactor key is under the third stone' > /data/fact");
    let stop = Arc::new(AtomicBool::new(false));
    let agent = stand_in_agent(&host, &daemon, stop.clone());

    dry_run_changes_nothing(&run);
    failing_upgrade_is_rolled_back(&run);
    good_upgrade_stays(&run);
    killed_upgrade_is_finished_by_the_next_run(&run);

    stop.store(true, Ordering::Relaxed);
    // The gates after the two rollbacks and the good upgrade's: one probe
    // each (the failed gates stopped at the sandbox that was down).
    assert_eq!(agent.join().unwrap(), 3, "the stand-in agent's answers");
    let audit = host.path("state/warden/audit.jsonl");
    let verify = appliance().args(["audit", "verify"]).arg(&audit).output().unwrap();
    assert_succeeded("appliance audit verify", &verify);
    let kinds: Vec<String> = fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "upgrade.started",
            "upgrade.rolled_back",
            "upgrade.started",
            "upgrade.ok",
            "upgrade.started",
            "upgrade.rolled_back"
        ],
        "the audit trail (kept by the rollbacks) records every upgrade"
    );
}

fn dry_run_changes_nothing(run: &Run) {
    let started = run.container("{{.State.StartedAt}}");
    let out = run.upgrade(&["--dry-run"]);
    assert_succeeded("appliance upgrade --dry-run", &out);
    let said = stdout(&out);
    assert!(said.contains("system generation 1 runs"), "{said}");
    assert!(
        said.contains("casper-image: appliance-upgrade-test:v1 -> appliance-upgrade-test:exits"),
        "{said}"
    );
    assert!(said.contains("sandboxes that restart: casper"), "{said}");
    assert_eq!(run.generation(), "1");
    assert_eq!(
        run.container("{{.State.StartedAt}}"),
        started,
        "the dry run touched the sandbox"
    );
    assert!(run.snapshots().is_empty(), "the dry run took a snapshot");
    assert!(!run.host.path("state/warden/audit.jsonl").exists());
}

fn failing_upgrade_is_rolled_back(run: &Run) {
    // The system: generation 1's image runs again.
    run.upgrade_is_rolled_back_to(
        "1",
        &["--timeout", "20"],
        &[
            "FAILED: sandbox casper: down (exited, exit code 1",
            "upgrade FAILED: sandbox casper: down",
            "Rolled back: the system to generation 1, the state to snapshot",
            "the upgrade failed and was rolled back (system generation 1",
        ],
    );
    assert_eq!(run.container("{{.State.Running}}"), "true");
    // The state: the fact is back, the migration the new version wrote is gone.
    assert_eq!(
        run.in_volume("cat /data/fact; ls /data"),
        "the reactor key is under the third stone\nfact\n"
    );
    let snapshots = run.snapshots();
    assert_eq!(snapshots.len(), 1);
    let tags = &snapshots[0]["tags"];
    assert_eq!(tags, &json!(["appliance-upgrade", "generation-1"]), "{tags}");
    assert!(!run.host.path("backup/upgrade.json").exists(), "the journal was left");
    assert!(
        !run.host.path("backup/staging-upgrade").exists(),
        "the staging was left"
    );
    let ops = run.host.ops_room();
    assert!(
        ops.iter().any(|m| m.starts_with("upgrade FAILED: sandbox casper: down")
            && m.contains("Rolled back: the system to generation 1")),
        "{ops:?}"
    );
}

fn good_upgrade_stays(run: &Run) {
    fs::write(run.standin.join("images/2"), image("v2")).unwrap();
    let out = run.upgrade(&["--timeout", "60"]);
    assert_succeeded("appliance upgrade", &out);
    assert!(
        stdout(&out).contains("upgraded: system generation 1 -> 2"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("ok: agent casper answered"), "{}", stderr(&out));
    run.assert_runs("2", "v2");
    // The new version's state stays.
    assert_eq!(run.in_volume("cat /data/schema"), "migrated to 2\n");
    assert_eq!(run.snapshots().len(), 2);
    assert!(!run.host.path("backup/upgrade.json").exists());
    let ops = run.host.ops_room();
    assert!(
        ops.iter()
            .any(|m| m.starts_with("upgrade done: system generation 1 -> 2")),
        "{ops:?}"
    );
}

/// `kill -9` of an upgrade during its health gate, then the next
/// `appliance upgrade`: it finishes that upgrade (the same snapshot, back
/// to the same generation), not a new one over it.
fn killed_upgrade_is_finished_by_the_next_run(run: &Run) {
    fs::write(run.standin.join("images/3"), image("exits")).unwrap();
    let mut child = run
        .upgrade_command(&["--timeout", "300"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Switched to generation 3: the gate waits for a sandbox that exits.
    while run.generation() != "3" {
        assert!(child.try_wait().unwrap().is_none(), "the upgrade ended before the gate");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the upgrade never switched"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the upgrade ended during the gate");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        run.host.path("backup/upgrade.json").exists(),
        "no journal to resume from"
    );

    run.upgrade_is_rolled_back_to(
        "2",
        &["--timeout", "15"],
        &[
            "an upgrade was interrupted (during the switch or the health gate); finishing it with snapshot",
            "of generation 2",
        ],
    );
    assert_eq!(run.in_volume("cat /data/schema"), "migrated to 2\n");
    assert_eq!(run.snapshots().len(), 3, "the rerun took a snapshot of its own");
    assert!(!run.host.path("backup/upgrade.json").exists());
}

/// A stand-in system program that only logs the steps it is asked for.
const LOGGING_STANDIN: &str = "#!/bin/sh\necho \"$@\" >> \"$STANDIN_LOG\"\n[ \"$1\" = generation ] && echo 7\nexit 0\n";

/// Before anything changes: an agent muted in the warden's state makes the
/// upgrade refuse (no gate could pass), and a snapshot that cannot be
/// taken stops it before the switch. Neither calls the switch; neither
/// leaves a journal. No Synapse, no Docker: it never gets that far.
#[test]
fn an_upgrade_changes_nothing_when_it_cannot_begin() {
    let dir = tempfile::tempdir().unwrap();
    // No repository at `repo`: the snapshot cannot be taken.
    let config = crate::support::backup_config(dir.path());
    fs::write(dir.path().join("backup.json"), config.to_string()).unwrap();
    fs::write(dir.path().join("password"), "pw\n").unwrap();
    let standin = dir.path().join("system");
    fs::write(&standin, LOGGING_STANDIN).unwrap();
    fs::set_permissions(&standin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let upgrade = || {
        appliance()
            .arg("upgrade")
            .arg("--plan")
            .arg(root().join("generated/bootstrap/plan.json"))
            .arg("--config")
            .arg(dir.path().join("backup.json"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--system-program")
            .arg(&standin)
            .env("STANDIN_LOG", dir.path().join("calls"))
            .output()
            .unwrap()
    };
    let warden = dir.path().join("state/warden");
    fs::create_dir_all(&warden).unwrap();
    let muted = json!({
        "since": null, "streaks": {}, "last_seen": {},
        "mutes": { "!room:magi": { "casper": { "previous": null, "halted_by": ADMIN, "looped": false } } },
    });
    // The upgrade fails (exit 1) saying `said`: all it said.
    let fails_saying = |said: &str| {
        let out = upgrade();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(said), "{err}");
        err
    };
    fs::write(warden.join("state.json"), muted.to_string()).unwrap();
    fails_saying("these agents are muted, so no health gate can pass: casper");
    assert!(!dir.path().join("calls").exists(), "a refused upgrade asked the system");

    fs::remove_file(warden.join("state.json")).unwrap();
    if require_tool("restic", "the upgrade's snapshot").is_none() {
        return;
    }
    let err = fails_saying("restic failed to take the upgrade's snapshot");
    assert!(err.contains("hint: nothing was switched"), "{err}");
    assert_eq!(fs::read_to_string(dir.path().join("calls")).unwrap(), "generation\n");
    assert!(!dir.path().join("backup/upgrade.json").exists());
    assert!(
        !dir.path().join("backup/staging-upgrade").exists(),
        "the staging was left"
    );
}

/// Stand-ins for `nix` and `ssh` (`--target-host`, docs/upgrade.md): no
/// Nix store and no remote host here. Each appends its argv to
/// `$STANDIN_LOG`, one call a line, words separated by tabs. The `nix`
/// stand-in "builds" by printing `nix build --json`'s result for
/// `$STANDIN_BUILT`, and the `ssh` stand-in runs the remote command with
/// `sh -c`, as the target's login shell would, with a stand-in
/// `systemd-run` first on PATH that records the words it was given:
/// what the remote shell made of the quoting. `$STANDIN_FAIL` names the
/// step that fails: `build`, `copy`, `remote` (the upgrade there exits 1)
/// or `connection` (ssh's 255).
const STANDIN_NIX: &str = r#"#!/bin/sh
# Stand-in for nix (tests/upgrade.rs, --target-host).
{ printf nix; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$STANDIN_LOG"
case "$3" in
  build)
    [ "$STANDIN_FAIL" = build ] && { echo "error: stand-in build failure" >&2; exit 1; }
    printf '[{"drvPath":"/nix/store/aaaa-x.drv","outputs":{"out":"%s"}}]\n' "$STANDIN_BUILT" ;;
  copy)
    [ "$STANDIN_FAIL" = copy ] && { echo "error: stand-in copy failure" >&2; exit 1; }
    exit 0 ;;
  *) exit 2 ;;
esac
"#;

const STANDIN_SSH: &str = r#"#!/bin/sh
# Stand-in for ssh (tests/upgrade.rs, --target-host).
{ printf ssh; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$STANDIN_LOG"
[ "$STANDIN_FAIL" = connection ] && { echo "ssh: connect to host hub port 22: Connection refused" >&2; exit 255; }
PATH="$STANDIN_REMOTE:$PATH" exec sh -c "$3"
"#;

const STANDIN_SYSTEMD_RUN: &str = r#"#!/bin/sh
# Stand-in for systemd-run on the target (tests/upgrade.rs, --target-host).
{ printf systemd-run; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$STANDIN_LOG"
[ "$STANDIN_FAIL" = remote ] && { echo "upgrade FAILED: stand-in" >&2; exit 1; }
echo "upgraded: system generation 1 -> 2"
"#;

const BUILT: &str = "/nix/store/0c5pw6pr4yb8v7rq3xqwkw8g1m6fgbq9-nixos-system-hub-25.11";

fn write_program(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `appliance upgrade --target-host` with the stand-ins first on PATH:
/// its output and the calls, each as its words.
fn upgrade_remotely(args: &[&str], fail: &str, built: &str) -> (Output, Vec<Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let (local, remote) = (dir.path().join("local"), dir.path().join("remote"));
    fs::create_dir_all(&local).unwrap();
    fs::create_dir_all(&remote).unwrap();
    write_program(&local.join("nix"), STANDIN_NIX);
    write_program(&local.join("ssh"), STANDIN_SSH);
    write_program(&remote.join("systemd-run"), STANDIN_SYSTEMD_RUN);
    let log = dir.path().join("calls");
    let path = format!("{}:{}", local.display(), std::env::var("PATH").unwrap_or_default());
    let out = appliance()
        .arg("upgrade")
        .args(args)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("STANDIN_LOG", &log)
        .env("STANDIN_REMOTE", &remote)
        .env("STANDIN_BUILT", built)
        .env("STANDIN_FAIL", fail)
        .output()
        .unwrap();
    let calls = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect();
    (out, calls)
}

fn words(line: &[&str]) -> Vec<String> {
    line.iter().map(|w| w.to_string()).collect()
}

#[test]
fn an_upgrade_of_a_target_host_builds_here_copies_and_runs_there() {
    let build = words(&[
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "build",
        "--no-link",
        "--json",
        ".#nixosConfigurations.hub.config.system.build.toplevel",
    ]);
    let copy = words(&[
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "copy",
        "--to",
        "ssh://root@hub",
        BUILT,
    ]);
    // The admin's name is the remote shell's to take apart: the stand-in
    // systemd-run must get it back as one word, nothing run.
    let admin = "gendo'; touch pwned; echo '$(id)";
    let remote = format!(
        "systemd-run --quiet --collect --wait --pipe --unit=appliance-upgrade --setenv=PATH -- \
         appliance upgrade --system {BUILT} --timeout 300 --probe-as 'gendo'\\''; touch pwned; echo '\\''$(id)' --dry-run"
    );
    let ssh = words(&["ssh", "--", "root@hub", &remote]);
    let systemd_run = words(&[
        "systemd-run",
        "--quiet",
        "--collect",
        "--wait",
        "--pipe",
        "--unit=appliance-upgrade",
        "--setenv=PATH",
        "--",
        "appliance",
        "upgrade",
        "--system",
        BUILT,
        "--timeout",
        "300",
        "--probe-as",
        admin,
        "--dry-run",
    ]);
    let args = [
        "--target-host",
        "root@hub",
        "--flake",
        ".#hub",
        "--timeout",
        "300",
        "--probe-as",
        admin,
        "--dry-run",
    ];

    let (out, calls) = upgrade_remotely(&args, "", BUILT);
    assert_succeeded("the upgrade of root@hub", &out);
    assert_eq!(calls, [build.clone(), copy.clone(), ssh.clone(), systemd_run.clone()]);
    assert!(
        stdout(&out).contains("upgraded: system generation 1 -> 2"),
        "{}",
        stdout(&out)
    );

    // Each step that fails stops the upgrade there, and says so.
    let cases: [(&str, usize, &str); 4] = [
        (
            "build",
            1,
            "building hub's system failed (exit status 1; Nix's error is above); nothing was copied to or changed on `root@hub`",
        ),
        (
            "copy",
            2,
            "copying the system to `root@hub` failed (exit status 1; Nix's error is above); nothing was changed there",
        ),
        (
            "connection",
            3,
            "`ssh root@hub` failed or the connection dropped (exit status 255)",
        ),
        (
            "remote",
            4,
            "the upgrade on `root@hub` failed (exit status 1); what failed and what was rolled back is above",
        ),
    ];
    let all = [build.clone(), copy, ssh, systemd_run];
    for (fail, made, said) in cases {
        let (out, calls) = upgrade_remotely(&args, fail, BUILT);
        assert_eq!(out.status.code(), Some(1), "{fail}: {}", stderr(&out));
        assert!(stderr(&out).contains(said), "{fail}: {}", stderr(&out));
        assert_eq!(calls, all[..made], "{fail}");
    }

    // What `nix build` printed reaches the remote shell only as a store path.
    let (out, calls) = upgrade_remotely(&args, "", "/nix/store/0c5pw6pr4yb8v7rq3xqwkw8g1m6fgbq9-x;reboot");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not one store path; nothing was copied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(calls, [build]);

    // A target that is not `user@host` runs nothing; nor does a flake
    // without the host.
    let refused: [(&[&str], &str); 3] = [
        (
            &["--target-host", "root@hub;reboot", "--flake", ".#hub"],
            "`hub;reboot` is not a host name or IPv4 address",
        ),
        (
            &["--target-host=-oProxyCommand=x", "--flake", ".#hub"],
            "is not a host name or IPv4 address",
        ),
        (
            &["--target-host", "root@hub", "--flake", "."],
            "`--flake .` names no host",
        ),
    ];
    for (args, said) in refused {
        let (out, calls) = upgrade_remotely(args, "", BUILT);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(said), "{}", stderr(&out));
        assert!(calls.is_empty(), "{args:?} ran {calls:?}");
    }
}
