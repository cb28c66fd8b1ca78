//! Issue 22 in the rehearsal: the warden (`appliance warden`, as
//! modules/warden.nix runs it: the generated plan, the host's state
//! directory, the appliance's own account) beside the real agents under
//! gVisor. `!status` lists the agents; `!halt casper` mutes casper at the
//! homeserver, so the answer it still makes never lands; `!resume casper`
//! and it answers again; the ops room has both; a stranger's and an
//! agent's `!halt all` are refused and audited; a loop between two agents
//! ends at the homeserver at the plan's budget and a human lifts it;
//! `!halt balthasar --stop` stops its container and `!resume` brings it
//! back; each agent's `kill -9` is one notice there, read from Docker; the
//! audit trail verifies, and a flipped byte is caught at its record.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::hub::Hub;
use crate::matrix::Member;
use agent_appliance::generator::model::{APPROVAL_SOCKET_DIR, SOCKET_DIR};
use agent_appliance::on_host::audit::Record;

/// How long a code execution request waits for an admin before the broker
/// refuses it (`--approval-timeout`; 300 s on the appliance): long enough
/// for the scenario's approver, short enough to wait out once.
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(45);

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
        .join(agent_appliance::on_host::warden::WARDEN_DIR)
        .join(agent_appliance::on_host::warden::AUDIT_FILE)
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
        .arg(hub.plan_path())
        .arg("--state-dir")
        .arg(hub.state_dir())
        .arg("--proxy-log")
        .arg(hub.proxy_log_path())
        // No systemd units here: `!halt --stop` asks the hub's dockerd.
        .args(["--sandbox-control", "docker"])
        // The approval broker's socket where casper's sandbox mounts it, and
        // casper-exec's own, both re-rooted like every host path here.
        .arg("--approval-sockets")
        .arg(hub.host_path(APPROVAL_SOCKET_DIR))
        .arg("--code-sockets")
        .arg(hub.host_path(SOCKET_DIR))
        .arg("--approval-timeout")
        .arg(APPROVAL_TIMEOUT.as_secs().to_string())
        // The grant files where the rehearsal's squid reads them, and its
        // reload (no systemd here).
        .arg("--grants-dir")
        .arg(hub.host_path(agent_appliance::common::grants::GRANTS_DIR))
        .arg("--proxy-reload")
        .arg(hub.proxy_reload())
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
fn command(hub: &Hub, admin: &Member, warden: &Warden, me: &str, body: &str, needle: &str) -> String {
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
    ops: Member,
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

    /// The admin approves each code execution card not in `decided` with
    /// a standing approval for `duration` (`!approve <id> <duration>`):
    /// the bench's attentive admin, so that casper's times measure its
    /// sandbox, not cards expiring.
    #[allow(dead_code)] // the bench's; the rehearsal decides card by card
    pub fn approve_new_cards(&self, hub: &Hub, decided: &mut Vec<String>, duration: &str) {
        for id in cards(hub, self) {
            if !decided.contains(&id) {
                self.ops.send(hub, text(&format!("!approve {id} {duration}")));
                eprintln!("bench: the admin approved {id} for {duration}");
                decided.push(id);
            }
        }
    }
}

/// The warden, started with the admin reading the ops room from before it
/// starts: its first poll already reports what happened earlier.
pub fn watch(hub: &Hub) -> Watch {
    let server = hub.appliance.matrix.server_name.clone();
    let me = format!("@appliance:{server}");
    let ops = Member::login(hub, "gendo", &format!("#appliance_ops:{server}"));
    let anchor = ops.send(hub, text("rehearsal: watching the ops room"));
    let warden = start(hub);
    Watch {
        warden,
        ops,
        anchor,
        me,
    }
}

pub fn halts_and_resumes(hub: &Hub, admin: &Member, agents: &[&str], watch: &Watch) {
    let (warden, ops, ops_anchor, me) = (&watch.warden, &watch.ops, &watch.anchor, &watch.me);
    let status = command(hub, admin, warden, me, "!status", "head sha256");
    for agent in agents {
        assert!(
            status.contains(&crate::matrix::agent_id(hub, agent)),
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
    // proxy, is summarised in the ops room.
    let denied = "balthasar → web.rehearsal.test:443";
    wait_until(
        Duration::from_secs(60),
        Duration::from_secs(1),
        || {
            ops.messages_after(hub, ops_anchor).iter().any(|e| {
                e["sender"] == me.as_str() && e["content"]["body"].as_str().is_some_and(|b| b.contains(denied))
            })
        },
        || {
            format!(
                "no `{denied}` egress notice in the ops room within 60 s:\n{}",
                warden.log()
            )
        },
    );
    eprintln!("rehearsal: the ops room has the egress denial `{denied}`");

    command(hub, admin, warden, me, "!halt casper", "halted");
    let casper = crate::matrix::agent_id(hub, "casper");
    let event = admin.mention(hub, &casper, "hello while halted tag-halted1");
    // casper still answers (the stand-in is asked), but Synapse refuses
    // what it sends: nothing from casper lands in the room.
    wait_until(
        Duration::from_secs(120),
        Duration::from_secs(1),
        || hub.standin_log().contains("tag-halted1"),
        || {
            format!(
                "casper never asked the model about the mention while halted\n{}",
                hub.all_reports()
            )
        },
    );
    std::thread::sleep(Duration::from_secs(15));
    let landed = crate::matrix::bodies_from(hub, admin, &event, "casper");
    assert!(
        landed.is_empty(),
        "casper's messages landed while it was halted: {landed:?}"
    );
    eprintln!("rehearsal: halted casper made an answer, and Synapse kept it out of the room");

    command(hub, admin, warden, me, "!resume casper", "resumed");
    let (body, seconds) = crate::matrix::ask(
        hub,
        admin,
        "casper",
        "hello again tag-resumed1",
        "[stand-in]",
        Duration::from_secs(120),
    );
    eprintln!("rehearsal: resumed casper answered in {seconds:.1} s: {body}");

    // The ops room saw the halt and the resume given in the agents' room.
    let notices = watch.notices(hub);
    for given in ["`!halt casper`", "`!resume casper`"] {
        assert!(
            notices.iter().any(|n| n.contains(given)),
            "no notice of {given} in the ops room: {notices:?}"
        );
    }
}

fn records(hub: &Hub) -> Vec<Record> {
    std::fs::read_to_string(audit_path(hub))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Record>(l).unwrap())
        .collect()
}

fn count(hub: &Hub, kind: &str, actor: Option<&str>) -> usize {
    records(hub)
        .iter()
        .filter(|r| r.kind == kind && actor.is_none_or(|a| r.actor == a))
        .count()
}

/// Waits up to 60 s for the trail to hold more records of `kind` by
/// `actor` than `before`.
fn wait_records(hub: &Hub, watch: &Watch, kind: &str, actor: &str, before: usize) {
    wait_records_within(hub, watch, kind, actor, before, Duration::from_secs(60));
}

fn wait_records_within(hub: &Hub, watch: &Watch, kind: &str, actor: &str, before: usize, within: Duration) {
    let started = Instant::now();
    while count(hub, kind, Some(actor)) <= before {
        assert!(
            started.elapsed() < within,
            "no new `{kind}` record by {actor} within {} s:\n{}",
            within.as_secs(),
            watch.warden.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn host_secret(hub: &Hub, relative: &str) -> String {
    let path = hub.state_dir().join("secrets").join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A human of this server who is not in the spec, `@<localpart>`:
/// registered with Synapse's shared secret (as `register_new_matrix_user`
/// does), invited into the admin's room by the appliance's account,
/// joined. Its access token. The client waits out 429s for up to 3
/// minutes (the appliance's account invited every member at bootstrap,
/// and Synapse limits invites per issuer).
pub fn invited_human(hub: &Hub, admin: &Member, localpart: &str) -> String {
    let secret = host_secret(hub, "_host/synapse/registration-shared-secret");
    let appliance = host_secret(hub, "_host/bootstrap/matrix-token");
    let user = json!({ "user_id": format!("@{localpart}:{}", hub.appliance.matrix.server_name) });
    let room = admin.room_id.clone();
    let localpart = localpart.to_string();
    hub.netns.run(move || {
        use crate::support::synapse::room_post;
        use agent_appliance::on_host::bootstrap::client::Client;
        let client = Client::new(
            "http://127.0.0.1:8008",
            Instant::now() + Duration::from_secs(180),
            Duration::from_secs(30),
        );
        let password = format!("{localpart}-password");
        let token = crate::support::synapse::register_with_shared_secret(&client, &secret, &localpart, &password);
        let invite = room_post(&client, &appliance, &room, "invite", &user);
        assert!(invite.ok(), "invite @{localpart}: {}", invite.describe());
        let join = room_post(&client, &token, &room, "join", &json!({}));
        assert!(join.ok(), "@{localpart} joins: {}", join.describe());
        token
    })
}

/// A stranger's `!halt all` and an agent's, sent with its own account
/// (what a prompt-injected agent could do), are refused, audited with the
/// homeserver-authenticated sender, and mute nobody.
pub fn refuses_strangers_and_agents(hub: &Hub, admin: &Member, watch: &Watch) {
    let server = hub.appliance.matrix.server_name.clone();
    let mutes = count(hub, "mute", None);
    let stranger = admin.other(&invited_human(hub, admin, "stranger"));
    let casper = admin.other(&host_secret(hub, "casper/matrix-token"));
    for (who, member) in [
        (format!("@stranger:{server}"), &stranger),
        (format!("@casper:{server}"), &casper),
    ] {
        let before = count(hub, "command.refused", Some(&who));
        member.send(hub, text("!halt all"));
        wait_records(hub, watch, "command.refused", &who, before);
        eprintln!("rehearsal: {who}'s `!halt all` refused and audited");
    }
    assert_eq!(count(hub, "mute", None), mutes, "a refused `!halt all` muted someone");
}

/// Stands in for agents whose own loop guards failed: casper's and
/// melchior's own accounts (their tokens, as the agents hold them) mention
/// each other every 2 s, as two agents answering each other would. The
/// warden counts agent messages since the last human one and, at the
/// plan's budget, mutes the room's agents: Synapse refuses the next one.
/// The loop breaker says so in the room and the ops room; the admin's next
/// mention lifts it, and both agents answer it.
pub fn breaks_a_loop(hub: &Hub, admin: &Member, watch: &Watch) {
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hub.plan_path()).unwrap()).unwrap();
    let budget = plan["loop_budget"]
        .as_u64()
        .unwrap_or(agent_appliance::schema::plan::DEFAULT_LOOP_BUDGET.into()) as usize;
    let casper_id = crate::matrix::agent_id(hub, "casper");
    let melchior_id = crate::matrix::agent_id(hub, "melchior");
    let casper = admin.other(&host_secret(hub, "casper/matrix-token"));
    let melchior = admin.other(&host_secret(hub, "melchior/matrix-token"));
    // No agent's name in it: Hermes answers a message naming it.
    let anchor = admin.send(hub, text("rehearsal: a loop between two agents follows"));
    let mut landed = 0;
    let refused = loop {
        assert!(
            landed <= budget + 2,
            "{landed} agent messages landed and the loop breaker did not stop them (budget {budget}):\n{}",
            watch.warden.log()
        );
        let (from, to) = if landed % 2 == 0 {
            (&casper, &melchior_id)
        } else {
            (&melchior, &casper_id)
        };
        let body = format!("{to}: and what do you think? ({landed})");
        let content = json!({ "msgtype": "m.text", "body": body, "m.mentions": { "user_ids": [to] } });
        match from.try_send(hub, content) {
            Ok(_) => landed += 1,
            Err(refused) => break refused,
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(
        refused.0, 403,
        "the looping agent was refused, but not as muted: {}",
        refused.1
    );
    // The warden counts every agent message since the last human one, the
    // loop's and any a real agent sent meanwhile: the room's history up to
    // its notice holds the budget's messages (one more may land while the
    // warden writes the power levels), and no agent message after it.
    // The warden mutes first and then posts its notice: under load the
    // refusal can come back before the notice is in the room.
    let me = watch.me.clone();
    let is_notice = |e: &serde_json::Value| {
        e["sender"] == me.as_str()
            && e["content"]["body"]
                .as_str()
                .is_some_and(|b| b.starts_with("loop breaker:"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut history = admin.messages_after(hub, &anchor);
    while !history.iter().any(is_notice) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        history = admin.messages_after(hub, &anchor);
    }
    let notice = history
        .iter()
        .position(is_notice)
        .unwrap_or_else(|| panic!("no loop-breaker notice in the room within 30 s: {history:#?}"));
    let agent_ids: Vec<String> = ["casper", "melchior", "balthasar"]
        .iter()
        .map(|a| crate::matrix::agent_id(hub, a))
        .collect();
    let from_agents = |events: &[serde_json::Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| agent_ids.iter().any(|a| e["sender"] == a.as_str()))
            .map(|e| format!("{}: {}", e["sender"], e["content"]["body"]))
            .collect()
    };
    let before = from_agents(&history[..notice]);
    let after = from_agents(&history[notice..]);
    assert!(
        before.len() == budget || before.len() == budget + 1,
        "{} agent messages before the loop breaker's notice (budget {budget}): {before:#?}",
        before.len()
    );
    assert!(after.is_empty(), "agent messages landed after the mute: {after:#?}");
    eprintln!(
        "rehearsal: the loop breaker muted the room's agents after {} agent messages ({landed} of them the loop's; budget {budget}); the next: {}",
        before.len(),
        refused.1
    );
    let ops = watch.notices(hub);
    assert!(
        ops.iter().any(|n| n.starts_with("loop breaker in #")),
        "no loop-breaker notice in the ops room: {ops:?}"
    );
    // A human message lifts the breaker. An agent that answers that very
    // message can be faster than the warden's unmute and be refused (seen
    // here: Hermes answered in under 2 s); so the admin speaks, waits for
    // the warden's notice, then asks (docs/warden.md).
    let over = admin.send(hub, text("rehearsal: enough, the loop is over"));
    let (lifted, _) = admin
        .wait_reply(hub, &over, &me, "loop breaker lifted", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no `loop breaker lifted` notice within 60 s:\n{}", watch.warden.log()));
    eprintln!("rehearsal: {lifted}");
    for agent in ["casper", "melchior"] {
        let (body, seconds) = crate::matrix::ask(
            hub,
            admin,
            agent,
            &format!("the loop is over, {agent} tag-afterloop"),
            "[stand-in]",
            Duration::from_secs(120),
        );
        eprintln!("rehearsal: after the loop breaker, {agent} answered in {seconds:.1} s: {body}");
    }
    let gendo = format!("@gendo:{}", hub.appliance.matrix.server_name);
    assert!(
        count(hub, "loop.tripped", Some("warden")) >= 1,
        "no loop.tripped record"
    );
    assert!(
        count(hub, "loop.lifted", Some(&gendo)) >= 1,
        "no loop.lifted record by {gendo}"
    );
}

/// The NixOS VM test's warden step (tests/rehearsal/scenario.py
/// `--step=warden`, nix/checks/hub-scenario.nix), run here against the
/// same warden so the VM test's client is proven on the real agents: its
/// `--kill` part is not (here the rehearsal, not systemd, restarts a killed
/// sandbox; `reported_the_kills` proves the notices).
pub fn vm_test_step(hub: &Hub, agents: &[&str]) {
    let secrets = hub.state_dir().join("secrets");
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(hub.plan_path()).unwrap()).unwrap();
    let mut extra = vec![
        "--code-agent=casper".to_string(),
        "--loop-agents=casper,melchior".to_string(),
        format!(
            "--warden-token-file={}",
            secrets.join("_host/bootstrap/matrix-token").display()
        ),
        format!("--audit-file={}", audit_path(hub).display()),
        format!("--appliance={}", env!("CARGO_BIN_EXE_appliance")),
    ];
    if let Some(budget) = plan["loop_budget"].as_u64() {
        extra.push(format!("--loop-budget={budget}"));
    }
    for agent in ["casper", "melchior"] {
        extra.push(format!(
            "--agent-token={agent}={}",
            secrets.join(agent).join("matrix-token").display()
        ));
    }
    crate::run_scenario(hub, "scenario-warden", agents, &["warden"], &extra);
}

/// `!halt <agent> --stop` stops the agent's container (the hub's dockerd
/// reports it stopped); `!resume <agent>` starts it and the agent answers.
/// Docker's events of that stop and start are reported like any other; the
/// watch then moves its anchor past them, so the kills that follow are
/// counted alone.
pub fn stops_and_starts(hub: &Hub, admin: &Member, watch: &mut Watch, agent: &str) {
    let me = watch.me.clone();
    command(
        hub,
        admin,
        &watch.warden,
        &me,
        &format!("!halt {agent} --stop"),
        "sandbox stopped",
    );
    assert!(
        !hub.is_running(agent),
        "{agent}'s container still runs after `!halt --stop`"
    );
    eprintln!("rehearsal: `!halt {agent} --stop` stopped its container");
    command(
        hub,
        admin,
        &watch.warden,
        &me,
        &format!("!resume {agent}"),
        "sandbox started",
    );
    assert!(
        hub.is_running(agent),
        "{agent}'s container does not run after `!resume`"
    );
    let (body, seconds) = crate::matrix::ask(
        hub,
        admin,
        agent,
        "back from a stop tag-restarted",
        "[stand-in]",
        Duration::from_secs(180),
    );
    eprintln!("rehearsal: after `!resume {agent}` it answered in {seconds:.1} s: {body}");
    let prefix = format!("sandbox {agent}:");
    wait_until(
        Duration::from_secs(90),
        Duration::from_secs(2),
        || {
            watch
                .notices(hub)
                .iter()
                .any(|n| n.starts_with(&prefix) && n.contains("started"))
        },
        || {
            format!(
                "no notice of {agent}'s stop and start in the ops room: {:?}",
                watch.notices(hub)
            )
        },
    );
    watch.anchor = watch.ops.send(hub, text("rehearsal: the kills follow"));
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
    let calls: Vec<agent_appliance::on_host::audit::Record> = trail
        .lines()
        .map(|l| serde_json::from_str::<agent_appliance::on_host::audit::Record>(l).unwrap())
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
        crate::support::appliance()
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

/// The id of a code execution card (`code execution request c3: ...
/// `!approve c3` ...`, docs/warden.md), if `notice` is one.
fn card_id(notice: &str) -> Option<String> {
    let id = notice.strip_prefix("code execution request ")?.split(':').next()?;
    notice.contains(&format!("`!approve {id}`")).then(|| id.to_string())
}

/// The code execution cards in the ops room since the watch began.
fn cards(hub: &Hub, watch: &Watch) -> Vec<String> {
    watch.notices(hub).iter().filter_map(|n| card_id(n)).collect()
}

/// Issue 23 items 2, 3 and 5: casper's code runs only after an admin's
/// approval, enforced by the warden's broker on the Docker socket casper's
/// sandbox mounts (whatever Hermes' own settings say). A request nobody
/// decides is refused when it times out, and the code does not run. Then
/// the card reaches the ops room; casper's own account approving its
/// request is refused and audited; the admin's `!approve <id> 10m` lets it
/// run, and the Docker calls that follow (Hermes makes a container, then
/// an exec per step) run under that standing approval without more cards.
pub fn code_waits_for_approval(hub: &Hub, admin: &Member, watch: &Watch) {
    let server = hub.appliance.matrix.server_name.clone();
    let gendo = format!("@gendo:{server}");
    let casper_id = format!("@casper:{server}");

    // What casper asked before anyone mentioned code (Hermes' own Docker
    // calls at its start), for the record.
    let earlier: Vec<String> = watch
        .notices(hub)
        .into_iter()
        .filter(|n| n.starts_with("code execution request "))
        .collect();
    eprintln!("rehearsal: code execution notices before the first `run code`: {earlier:#?}");

    // Nobody decides: the broker refuses at the timeout and nothing runs.
    let seen = cards(hub, watch).len();
    let event = admin.mention(hub, &casper_id, "run code tag-unapproved1");
    let started = Instant::now();
    let id = loop {
        if let Some(id) = cards(hub, watch).into_iter().nth(seen) {
            break id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no code execution card for casper's `run code` within 180 s:\n{}",
            watch.warden.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    wait_notice(
        hub,
        watch,
        &[&format!("code execution request {id} expired")],
        APPROVAL_TIMEOUT + Duration::from_secs(60),
    );
    let answer = admin
        .wait_reply(hub, &event, &casper_id, "[stand-in]", Duration::from_secs(240))
        .map(|(body, _)| body)
        .unwrap_or_default();
    assert!(
        !crate::matrix::bodies_from(hub, admin, &event, "casper")
            .iter()
            .any(|b| b.contains(CODE_OUTPUT)),
        "casper's code ran although nobody approved it: {answer}"
    );
    assert_eq!(count(hub, "approval.approved", None), 0);
    eprintln!(
        "rehearsal: {id}, which nobody decided, was refused after {:.1} s; casper answered: {answer}",
        started.elapsed().as_secs_f64()
    );

    let casper = admin.other(&host_secret(hub, "casper/matrix-token"));
    let seen_before = cards(hub, watch).len();
    let event = admin.mention(hub, &casper_id, "run code tag-approved1");
    let started = Instant::now();
    let mut decided: Vec<String> = Vec::new();
    while !crate::matrix::bodies_from(hub, admin, &event, "casper")
        .iter()
        .any(|b| b.contains(CODE_OUTPUT))
    {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "casper did not answer `run code` with its output within 240 s (cards: {:?}); its messages: {:?}\n{}\n{}",
            cards(hub, watch),
            crate::matrix::bodies_from(hub, admin, &event, "casper"),
            watch.warden.log(),
            hub.all_reports()
        );
        for id in cards(hub, watch).into_iter().skip(seen_before) {
            if decided.contains(&id) {
                continue;
            }
            if decided.is_empty() {
                // The agent approving its own request: refused, audited,
                // and the request still waits.
                let before = count(hub, "command.refused", Some(&casper_id));
                casper.send(hub, text(&format!("!approve {id} 10m")));
                wait_records(hub, watch, "command.refused", &casper_id, before);
                eprintln!("rehearsal: casper's own `!approve {id} 10m` refused and audited");
            }
            watch.ops.send(hub, text(&format!("!approve {id} 10m")));
            eprintln!(
                "rehearsal: the admin approved {id} for 10 minutes after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            decided.push(id);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(!decided.is_empty(), "casper's code ran without a card in the ops room");
    assert_eq!(count(hub, "approval.approved", Some(&casper_id)), 0);
    let started_wait = Instant::now();
    while count(hub, "approval.approved", Some(&gendo)) < decided.len() {
        assert!(
            started_wait.elapsed() < Duration::from_secs(60),
            "the admin's approvals of {decided:?} are not all audited:\n{}",
            watch.warden.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let standing = count(hub, "approval.standing_used", Some(&gendo));
    assert!(
        standing > 0,
        "no Docker call of casper's ran under the standing approval (cards: {decided:?})"
    );
    eprintln!(
        "rehearsal: casper's code ran in {:.1} s after the admin approved {} for 10 minutes; {standing} more Docker call(s) ran under that approval without a card",
        started.elapsed().as_secs_f64(),
        decided.join(", ")
    );
}

/// What the stand-in's program prints (tests/rehearsal/README.md).
const CODE_OUTPUT: &str = "computed 42001";

/// Waits up to 60 s for a line of squid's access log past `offset` lines:
/// a request from `address` to `host:443` with `verdict` (`TCP_DENIED`,
/// `TCP_TUNNEL`).
fn wait_proxy_line(hub: &Hub, offset: usize, address: &str, verdict: &str, host: &str) {
    let target = format!("{host}:443");
    let started = Instant::now();
    loop {
        let log = hub.proxy_log();
        if log
            .lines()
            .skip(offset)
            .any(|l| l.split_whitespace().nth(2) == Some(address) && l.contains(verdict) && l.contains(&target))
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "squid logged no {verdict} {target} from {address} within 60 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls `done` every `every` until it holds; the rehearsal fails with
/// `why()` once `within` has passed.
#[track_caller]
fn wait_until(within: Duration, every: Duration, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{}", why());
        std::thread::sleep(every);
    }
}

/// Waits up to `within` for a warden notice in the ops room containing
/// every one of `needles`; returns it.
fn wait_notice(hub: &Hub, watch: &Watch, needles: &[&str], within: Duration) -> String {
    let started = Instant::now();
    loop {
        if let Some(notice) = watch
            .notices(hub)
            .into_iter()
            .rev()
            .find(|n| needles.iter().all(|needle| n.contains(needle)))
        {
            return notice;
        }
        assert!(
            started.elapsed() < within,
            "no ops-room notice with {needles:?} within {} s: {:?}\n{}",
            within.as_secs(),
            watch.notices(hub),
            watch.warden.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Issue 23 items 1 and 5, from inside balthasar's sandbox under gVisor
/// (`gh api --hostname <host> user`, a domain-list agent's own CLI): a host
/// outside its list is refused by the proxy and carded in the ops room with
/// the `!allow` that would grant it; casper's own account granting it is
/// refused; IP and metadata grants are refused by the warden; the admin's
/// `!allow` opens it for balthasar alone (the same request then reaches
/// the host); a granted name that resolves to a private address stays
/// refused by the proxy; and after the grant ends, the request is refused
/// again.
pub fn egress_grants_from_the_room(hub: &Hub, admin: &Member, watch: &Watch) {
    use crate::hub::{GRANT_HOST, PRIVATE_GRANT_HOST};
    let server = hub.appliance.matrix.server_name.clone();
    let gendo = format!("@gendo:{server}");
    let casper_id = format!("@casper:{server}");
    let (_, sandbox) = hub.appliance.sandbox("balthasar").unwrap();
    let address = sandbox.network.as_ref().unwrap().address.to_string();
    let gh = |host: &str| {
        hub.daemon
            .docker(&["exec", "balthasar", "gh", "api", "--hostname", host, "user"])
    };
    let lines = || hub.proxy_log().lines().count();
    // balthasar's request to `host` fails, and squid logs it denied.
    let refused = |host: &str| {
        let offset = lines();
        assert!(!gh(host).status.success());
        wait_proxy_line(hub, offset, &address, "TCP_DENIED", host);
    };

    // Refused, and carded with the grant that would open it.
    refused(GRANT_HOST);
    let card = wait_notice(
        hub,
        watch,
        &[
            &format!("balthasar → {GRANT_HOST}:443"),
            &format!("`!allow balthasar {GRANT_HOST}"),
        ],
        Duration::from_secs(90),
    );
    eprintln!("rehearsal: the ops room has the denial with its grant: {card}");

    // Not an admin: refused, no grant.
    let before = count(hub, "command.refused", Some(&casper_id));
    let casper = admin.other(&host_secret(hub, "casper/matrix-token"));
    casper.send(hub, text(&format!("!allow balthasar {GRANT_HOST} 1h")));
    wait_records(hub, watch, "command.refused", &casper_id, before);
    assert_eq!(count(hub, "grant", None), 0, "casper's `!allow` granted something");
    eprintln!("rehearsal: casper's own `!allow balthasar {GRANT_HOST}` refused and audited");

    // Addresses and metadata names are never granted.
    for host in ["169.254.169.254", "metadata.google.internal"] {
        let answer = command(
            hub,
            &watch.ops,
            &watch.warden,
            &watch.me,
            &format!("!allow balthasar {host} 1m"),
            "not granted",
        );
        eprintln!("rehearsal: `!allow balthasar {host}`: {answer}");
    }

    // The admin's grant: the same request now goes through the proxy to
    // the host (the stand-in behind that name logs it), from balthasar only.
    let answer = command(
        hub,
        &watch.ops,
        &watch.warden,
        &watch.me,
        &format!("!allow balthasar {GRANT_HOST} 40s"),
        "granted",
    );
    eprintln!("rehearsal: {answer}");
    let seen = hub.github_log().len();
    let offset = lines();
    let out = gh(GRANT_HOST);
    wait_proxy_line(hub, offset, &address, "TCP_TUNNEL", GRANT_HOST);
    let reached: Vec<_> = hub.github_log().into_iter().skip(seen).collect();
    assert!(
        !reached.is_empty(),
        "balthasar's granted request did not reach {GRANT_HOST}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A plain tunnel: the proxy adds the GitHub token on GitHub's hosts only.
    assert!(
        reached.iter().all(|r| r["sent"] != "token"),
        "the token reached {GRANT_HOST}: {reached:?}"
    );
    eprintln!("rehearsal: granted, balthasar's `gh api --hostname {GRANT_HOST}` reached it: {reached:?}");

    // A granted name that resolves to a private address: still refused.
    command(
        hub,
        &watch.ops,
        &watch.warden,
        &watch.me,
        &format!("!allow balthasar {PRIVATE_GRANT_HOST} 40s"),
        "granted",
    );
    refused(PRIVATE_GRANT_HOST);
    let notice = wait_notice(
        hub,
        watch,
        &[
            &format!("balthasar → {PRIVATE_GRANT_HOST}:443"),
            "despite an open grant",
        ],
        Duration::from_secs(90),
    );
    eprintln!("rehearsal: {notice}");

    // The grant ends by itself, and the request is refused again.
    wait_until(
        Duration::from_secs(120),
        Duration::from_secs(1),
        || count(hub, "grant.expired", Some("warden")) >= 2,
        || format!("the grants did not expire within 120 s:\n{}", watch.warden.log()),
    );
    refused(GRANT_HOST);
    assert!(count(hub, "grant", Some(&gendo)) >= 2 && count(hub, "grant.refused", Some(&gendo)) >= 2);
    eprintln!("rehearsal: the grant expired and {GRANT_HOST} is refused again");
}
