//! Issue 22 in the rehearsal: the warden (`appliance warden`, as
//! modules/warden.nix runs it: the generated plan, the host's state
//! directory, the appliance's own account) beside the real agents under
//! gVisor. `!status` lists the agents; `!halt casper` mutes casper at the
//! homeserver, so the answer it still makes never lands; `!resume casper`
//! and it answers again; the ops room has both; each agent's `kill -9` is
//! one notice there, read from Docker; the audit trail verifies, and a
//! flipped byte is caught at its record.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::root;
use crate::hub::Hub;
use crate::matrix::Admin;

/// The warden process, killed and reaped when dropped.
struct Warden {
    child: Child,
    log: PathBuf,
}

impl Drop for Warden {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Warden {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn audit_path(hub: &Hub) -> PathBuf {
    hub.state_dir()
        .join(agent_appliance::warden::WARDEN_DIR)
        .join(agent_appliance::warden::AUDIT_FILE)
}

/// Starts `appliance warden` in the hub's namespace and waits for its
/// `warden.start` record (it has resolved every room by then).
fn start(hub: &Hub) -> Warden {
    let log = hub.host_root.path().join("warden.log");
    let out = File::create(&log).unwrap();
    let child = hub
        .netns
        .command(env!("CARGO_BIN_EXE_appliance"))
        .arg("warden")
        .arg("--plan")
        .arg(root().join("generated/bootstrap/plan.json"))
        .arg("--state-dir")
        .arg(hub.state_dir())
        .arg("--proxy-log")
        .arg(hub.proxy_log_path())
        // The hub's dockerd, as the host's socket is on the appliance.
        .env("DOCKER_HOST", format!("unix://{}", hub.daemon.socket.display()))
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("failed to start appliance warden");
    let mut warden = Warden { child, log };
    let started = Instant::now();
    while !std::fs::read_to_string(audit_path(hub)).is_ok_and(|a| a.contains("\"warden.start\"")) {
        if let Ok(Some(status)) = warden.child.try_wait() {
            panic!(
                "appliance warden exited ({status}) before it started:\n{}",
                warden.log()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "appliance warden did not start within 60 s:\n{}",
            warden.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Its first /sync takes the current position; commands sent before it
    // are not handled. Give it that first sync.
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("rehearsal: warden started");
    warden
}

fn text(body: &str) -> serde_json::Value {
    json!({ "msgtype": "m.text", "body": body })
}

/// An admin command in the admin's room and the warden's answer containing
/// `needle`.
fn command(hub: &Hub, admin: &Admin, warden: &Warden, me: &str, body: &str, needle: &str) -> String {
    let event = admin.send(hub, text(body));
    let (answer, seconds) = admin
        .wait_reply(hub, &event, me, needle, Duration::from_secs(60))
        .unwrap_or_else(|| {
            panic!(
                "the warden did not answer `{body}` with `{needle}` within 60 s:\n{}",
                warden.log()
            )
        });
    eprintln!("rehearsal: `{body}` answered in {seconds:.1} s: {answer}");
    answer
}

/// The warden, still running, and the ops room as @gendo sees it from
/// `anchor` on.
pub struct Watch {
    warden: Warden,
    ops: Admin,
    anchor: String,
    me: String,
}

impl Watch {
    /// The warden's messages in the ops room since the anchor.
    fn notices(&self, hub: &Hub) -> Vec<String> {
        self.ops
            .messages_after(hub, &self.anchor)
            .into_iter()
            .filter(|e| e["sender"] == self.me.as_str())
            .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

pub fn halts_and_resumes(hub: &Hub, admin: &Admin, agents: &[&str]) -> Watch {
    let server = hub.appliance.matrix.server_name.clone();
    let me = format!("@appliance:{server}");
    // The admin reads the ops room from before the warden starts: its first
    // poll already reports what happened earlier (the egress denial).
    let ops = Admin::login(hub, "gendo", &format!("#appliance_ops:{server}"));
    let ops_anchor = ops.send(hub, text("rehearsal: watching the ops room"));
    let warden = start(hub);

    let status = command(hub, admin, &warden, &me, "!status", "head sha256");
    for agent in agents {
        assert!(
            status.contains(&crate::agent_id(hub, agent)),
            "`!status` does not list {agent}: {status}"
        );
        // Its sandbox, as the hub's dockerd reports it.
        assert!(
            status.contains(&format!("sandbox {agent}: up")),
            "`!status` does not show {agent}'s sandbox up: {status}"
        );
    }
    // The services' sandboxes too (the plan lists every sandbox of the hub).
    for sandbox in hub.sandboxes() {
        assert!(
            status.contains(&format!("sandbox {}: up", sandbox.name)),
            "`!status` does not show sandbox {} up: {status}",
            sandbox.name
        );
    }

    // balthasar's `gh api --hostname web.rehearsal.test`, refused by the
    // proxy before the warden started, is summarised in the ops room.
    let started = Instant::now();
    let denied = "balthasar → web.rehearsal.test:443";
    while !ops
        .messages_after(hub, &ops_anchor)
        .iter()
        .any(|e| e["sender"] == me.as_str() && e["content"]["body"].as_str().is_some_and(|b| b.contains(denied)))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no `{denied}` egress notice in the ops room within 60 s:\n{}",
            warden.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("rehearsal: the ops room has the egress denial `{denied}`");

    command(hub, admin, &warden, &me, "!halt casper", "halted");
    let casper = crate::agent_id(hub, "casper");
    let event = admin.mention(hub, &casper, "hello while halted tag-halted1");
    // casper still answers (the stand-in is asked), but Synapse refuses
    // what it sends: nothing from casper lands in the room.
    let started = Instant::now();
    while !hub.standin_log().contains("tag-halted1") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "casper never asked the model about the mention while halted\n{}",
            hub.all_reports()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(15));
    let landed = crate::bodies_from(hub, admin, &event, "casper");
    assert!(
        landed.is_empty(),
        "casper's messages landed while it was halted: {landed:?}"
    );
    eprintln!("rehearsal: halted casper made an answer, and Synapse kept it out of the room");

    command(hub, admin, &warden, &me, "!resume casper", "resumed");
    let (body, seconds) = crate::ask(
        hub,
        admin,
        "casper",
        "hello again tag-resumed1",
        "[stand-in]",
        Duration::from_secs(120),
    );
    eprintln!("rehearsal: resumed casper answered in {seconds:.1} s: {body}");

    // The ops room saw the halt and the resume given in the agents' room.
    let watch = Watch {
        warden,
        ops,
        anchor: ops_anchor,
        me,
    };
    let notices = watch.notices(hub);
    for given in ["`!halt casper`", "`!resume casper`"] {
        assert!(
            notices.iter().any(|n| n.contains(given)),
            "no notice of {given} in the ops room: {notices:?}"
        );
    }
    watch
}

/// After each agent's `kill -9` (and the unit's restart): exactly one
/// notice of its death in the ops room, from Docker's events; then the
/// warden stops and its trail is checked.
pub fn reported_the_kills(hub: &Hub, watch: Watch, killed: &[&str]) {
    let started = Instant::now();
    let died = |notices: &[String], agent: &str| -> usize {
        notices
            .iter()
            .filter(|n| n.starts_with(&format!("sandbox {agent}: died")))
            .count()
    };
    loop {
        let notices = watch.notices(hub);
        if killed.iter().all(|a| died(&notices, a) >= 1) {
            for agent in killed {
                assert_eq!(
                    died(&notices, agent),
                    1,
                    "not exactly one notice of {agent}'s kill: {notices:?}"
                );
            }
            let shown: Vec<&String> = notices.iter().filter(|n| n.starts_with("sandbox ")).collect();
            eprintln!("rehearsal: the ops room's sandbox notices: {shown:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the warden did not report every kill ({killed:?}) within 120 s: {notices:?}\n{}",
            watch.warden.log()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(watch);
    audit_holds(hub);
}

/// `appliance audit verify` accepts the trail the warden wrote, which holds
/// the commands, the mute and the unmute; a copy with one byte flipped in a
/// record fails at that record.
fn audit_holds(hub: &Hub) {
    let audit = audit_path(hub);
    let trail = std::fs::read_to_string(&audit).unwrap();
    for kind in [
        "\"command\"",
        "\"mute\"",
        "\"unmute\"",
        "\"sandbox.exit\"",
        "\"egress.denied\"",
    ] {
        assert!(trail.contains(kind), "no {kind} record in the audit trail:\n{trail}");
    }
    // The agents' tool calls, read from each kind's own record: casper's
    // code run, melchior's browse, balthasar's gh.
    let calls: Vec<agent_appliance::audit::Record> = trail
        .lines()
        .map(|l| serde_json::from_str::<agent_appliance::audit::Record>(l).unwrap())
        .filter(|r| r.kind == "tool.call")
        .collect();
    let server = &hub.appliance.matrix.server_name;
    for (agent, tool, target) in [
        ("casper", "terminal", "computed"),
        ("melchior", "browser", "web.rehearsal.test"),
        ("balthasar", "exec", "gh --version"),
    ] {
        let actor = format!("@{agent}:{server}");
        assert!(
            calls
                .iter()
                .any(|r| r.actor == actor && r.subject == tool && r.detail.contains(target)),
            "no tool.call record of {agent}'s {tool} on `{target}`: {calls:#?}"
        );
    }
    eprintln!("rehearsal: {} tool calls in the audit trail", calls.len());
    let verify = |file: &std::path::Path| {
        crate::common::appliance()
            .args(["audit", "verify"])
            .arg(file)
            .output()
            .unwrap()
    };
    let output = verify(&audit);
    assert!(
        output.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut bytes = trail.into_bytes();
    let second_line = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    let detail = second_line
        + String::from_utf8_lossy(&bytes[second_line..])
            .find("\"detail\":\"")
            .unwrap()
        + 10;
    bytes[detail] ^= 0x01;
    let tampered = hub.host_root.path().join("audit-tampered.jsonl");
    std::fs::write(&tampered, &bytes).unwrap();
    let output = verify(&tampered);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "a flipped byte passed audit verify: {said}");
    assert!(said.contains("line 2"), "audit verify did not name line 2: {said}");
    eprintln!("rehearsal: audit trail verified; a flipped byte: {}", said.trim());
}
