//! The rehearsal: the hub of the default spec under real gVisor, where the
//! agents answer in the room. What is substituted, and why, is in
//! docs/rehearsal.md; `scripts/rehearse.sh` runs this test alone.
//!
//! Needs root, runsc, dockerd, debootstrap, dnsmasq, nsenter, npm, the
//! Synapse venv (.ci/run installs them all); with CI=true a missing tool
//! fails the test, otherwise it is skipped loudly.

#[path = "../support/mod.rs"]
mod support;

mod hub;
mod images;
mod matrix;
mod restore;
mod setup;
mod upgrade;
mod warden;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use agent_appliance::generator::model::Sandbox;
use agent_appliance::generator::spec::schema::AgentKind;

use crate::hub::{Hub, Services};
use crate::matrix::{Member, ask, bodies_from, first_answer, model_of};
use crate::setup::{Start, build_images, start_sandboxes, tools_present};
use crate::support::{in_ci, root};

/// How long melchior may take from "read page" to the page's title, its
/// browser started cold in gVisor and the page fetched through the egress
/// proxy. Measured here: 20-36 s (docs/rehearsal.md); generous for a
/// loaded CI.
const BROWSE: Duration = Duration::from_secs(180);

/// Every sandbox of the hub running, and `@gendo` logged in.
/// The hub with its images, then the warden (as systemd orders it before
/// the agent whose Docker is its approval broker), then every sandbox.
fn bring_up() -> Option<(Hub, Member, warden::Watch)> {
    if !tools_present() {
        return None;
    }
    let venv = crate::support::synapse::venv()?;
    let name = format!("rehearsal-{}", std::process::id());
    let hub = hub::start(&name, Services { synapse_venv: &venv });
    build_images(&hub);
    let watch = warden::watch(&hub);
    start_sandboxes(&hub, Start::OneByOne);
    let admin = Member::login(&hub, "gendo", &format!("#magi:{}", hub.appliance.matrix.server_name));
    hold_for_debugging(&hub);
    Some((hub, admin, watch))
}

/// `APPLIANCE_REHEARSAL_HOLD=SECS` keeps the hub up that long after start,
/// for a developer to look inside (refused in CI).
fn hold_for_debugging(hub: &Hub) {
    let Ok(secs) = std::env::var("APPLIANCE_REHEARSAL_HOLD") else {
        return;
    };
    assert!(!in_ci(), "APPLIANCE_REHEARSAL_HOLD is for development");
    eprintln!(
        "rehearsal: holding {secs} s: DOCKER_HOST=unix://{} netns {}",
        hub.daemon.socket.display(),
        hub.netns.name
    );
    std::thread::sleep(Duration::from_secs(secs.parse().unwrap_or(600)));
}

/// Issue 10 item 6: the sandbox resolves names through the generated
/// resolv.conf (the forwarder on the bridge address), under gVisor.
fn resolver_works(hub: &Hub, sandbox: &str) {
    let script = format!("import socket; print(socket.gethostbyname('{}'))", hub::WEB_HOST);
    let output = hub.daemon.docker(&["exec", sandbox, "python3", "-c", &script]);
    let address = hub::WEB_ADDRESS.to_string();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == address,
        "{sandbox} cannot resolve {}: {}{}\nresolv.conf: {}",
        hub::WEB_HOST,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&hub.daemon.docker(&["exec", sandbox, "cat", "/etc/resolv.conf"]).stdout)
    );
    eprintln!("rehearsal: {sandbox} resolves {} to {address}", hub::WEB_HOST);
}

/// Issue 10 item 5: casper's code tool ran its program (once an admin
/// approved it, `warden::code_waits_for_approval`) in a container of the
/// code sandbox's inner dockerd (under gVisor), in the code runner image.
fn code_ran_in_the_code_sandbox(hub: &Hub) {
    let inner = hub
        .daemon
        .docker(&["exec", "casper-exec", "docker", "ps", "-a", "--format", "{{.Image}}"]);
    let images = String::from_utf8_lossy(&inner.stdout);
    assert!(
        images.contains(agent_appliance::generator::model::CODE_RUNNER_IMAGE),
        "no code-runner container in the inner dockerd: {images}"
    );
}

/// Issue 21 item 2: balthasar (PicoClaw, `remote-exec`) runs the GitHub
/// skill's CLI through its exec tool when asked in the room, under gVisor,
/// and the answer carries the command's output.
fn picoclaw_runs_gh_from_chat(hub: &Hub, admin: &Member) {
    let (body, seconds) = ask(
        hub,
        admin,
        "balthasar",
        "run gh tag-gh1",
        "gh version",
        Duration::from_secs(120),
    );
    eprintln!("rehearsal: balthasar ran `gh --version` from chat in {seconds:.1} s: {body}");
    // `gh api` from chat: through the egress proxy (balthasar's allowlist
    // has api.github.com) to the stand-in GitHub API; balthasar holds only
    // a placeholder, and the proxy adds the operator's token from the file
    // `credentials` names (the stand-in accepts nothing else);
    // `token_stays_outside_balthasar` shows the sandbox never holds it.
    let (body, seconds) = ask(
        hub,
        admin,
        "balthasar",
        "run gh api tag-gh2",
        hub::GITHUB_LOGIN,
        Duration::from_secs(120),
    );
    eprintln!("rehearsal: balthasar ran `gh api user` from chat in {seconds:.1} s: {body}");
    assert!(
        hub.github_requests().iter().any(|(path, ok)| path == "/user" && *ok),
        "the stand-in GitHub API saw no authorized GET /user: {:?}",
        hub.github_requests()
    );
    let (_, sandbox) = hub.appliance.sandbox("balthasar").unwrap();
    let address = sandbox.network.as_ref().unwrap().address.to_string();
    let tunnel = format!("{}:443", hub::GITHUB_API);
    assert!(
        hub.proxy_log().lines().any(|l| {
            l.split_whitespace().nth(2) == Some(address.as_str()) && l.contains("CONNECT") && l.contains(&tunnel)
        }),
        "squid logged no CONNECT {tunnel} from balthasar ({address}):\n{}",
        hub.proxy_log()
    );
    // A host that is not on balthasar's allowlist: squid refuses the tunnel.
    let refused = hub
        .daemon
        .docker(&["exec", "balthasar", "gh", "api", "--hostname", hub::WEB_HOST, "user"]);
    let denied = format!("{}:443", hub::WEB_HOST);
    assert!(
        !refused.status.success()
            && hub.proxy_log().lines().any(|l| {
                l.split_whitespace().nth(2) == Some(address.as_str()) && l.contains("TCP_DENIED") && l.contains(&denied)
            }),
        "balthasar's `gh api --hostname {}` was not refused by the proxy: {}{}\n{}",
        hub::WEB_HOST,
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr),
        hub.proxy_log()
    );
    eprintln!(
        "rehearsal: balthasar's gh reached the stand-in GitHub API through the proxy; {denied} refused: {}",
        String::from_utf8_lossy(&refused.stderr).trim()
    );
}

/// Issue 23 items 4 and 5: the operator's GitHub token reached the stand-in
/// API (the proxy added it), yet inside balthasar's sandbox under gVisor
/// its environment, every process's environment and every file it can
/// read hold only the placeholder.
fn token_stays_outside_balthasar(hub: &Hub) {
    let token = hub.github_token();
    let token = token.trim();
    let (_, sandbox) = hub.appliance.sandbox("balthasar").unwrap();
    let placeholder = &sandbox.credentials[0].placeholder;
    let log = hub.github_log();
    assert!(
        log.iter().any(|r| r["path"] == "/user" && r["sent"] == "token"),
        "the stand-in GitHub API never received the token: {log:?}"
    );
    let sandbox_says = |script: &str| {
        let out = hub.daemon.docker(&["exec", "balthasar", "bash", "-c", script]);
        String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned()
    };
    let env = sandbox_says("env");
    assert!(
        env.contains(placeholder),
        "balthasar's env lacks its placeholder:\n{env}"
    );
    assert!(!env.contains(token), "balthasar's env holds the token");
    let environs = sandbox_says("cat /proc/[0-9]*/environ | tr '\\0' '\\n'");
    assert!(
        environs.contains(placeholder),
        "no process of balthasar's has the placeholder:\n{environs}"
    );
    assert!(
        !environs.contains(token),
        "a process in balthasar's sandbox holds the token"
    );
    // Every file it can read, but the kernel's views.
    let found = sandbox_says(&format!(
        "grep -rlsF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -- '{token}' / ; echo searched"
    ));
    assert_eq!(
        found.trim(),
        "searched",
        "files in balthasar's sandbox hold the token: {found}"
    );
    eprintln!(
        "rehearsal: the GitHub API got the token from the proxy; in balthasar's sandbox env, /proc and every readable file hold only {placeholder}"
    );
}

/// H3's scenario (tests/rehearsal/scenario.py, the client the NixOS VM
/// test runs too) as @gendo and a stranger, inside the namespace: joined,
/// mentions answered through the stand-in with each agent's model,
/// unmentioned messages and strangers ignored, code run, the agents'
/// mutual mentions bounded by the loop guard, no rate-limited send.
fn scenario(hub: &Hub) {
    let running: Vec<String> = hub.sandboxes().into_iter().map(|s| s.name).collect();
    // balthasar (PicoClaw) in the steps that are about every agent: joined,
    // answers a mention, ignores unmentioned messages and strangers.
    let agents: Vec<&str> = ["casper", "melchior", "balthasar"]
        .into_iter()
        .filter(|a| running.iter().any(|r| r == a))
        .collect();
    let browse = [
        "--browser-agent=melchior".to_string(),
        format!("--page-url={}", hub::web_url("index.html")),
        format!("--page-title={}", hub::WEB_TITLE),
        format!("--browse-timeout={}", BROWSE.as_secs()),
    ];
    run_scenario(
        hub,
        "scenario",
        &agents,
        &["joined", "mention", "unmentioned", "stranger", "code", "browse", "loop"],
        &[&browse[..], &["--approve-code".to_string()]].concat(),
    );
    // The loop again with balthasar second in the ring: melchior mentions it,
    // and PicoClaw, like the others, must not answer another agent.
    if agents.contains(&"balthasar") {
        run_scenario(
            hub,
            "scenario-loop-picoclaw",
            &["melchior", "balthasar"],
            &["loop"],
            &["--loop-agents=melchior,balthasar".to_string()],
        );
    }
    // Nothing was lost to Synapse's rate limits, in any agent's log.
    for agent in &agents {
        let output = hub.daemon.docker(&["logs", agent]);
        let log = String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned();
        let limited: Vec<&str> = log
            .lines()
            .filter(|l| {
                ["M_LIMIT_EXCEEDED", "Too Many Requests", "Fallback send also failed"]
                    .iter()
                    .any(|p| l.contains(p))
            })
            .collect();
        assert!(limited.is_empty(), "{agent} hit Synapse's rate limit: {limited:?}");
    }
}

/// One run of tests/rehearsal/scenario.py in the hub's namespace, as @gendo,
/// with `agents` and `steps`; its results go to `<scratch>/<name>.json`.
fn run_scenario(hub: &Hub, name: &str, agents: &[&str], steps: &[&str], extra: &[String]) {
    let scratch = hub.host_root.path().join("scenario");
    std::fs::create_dir_all(&scratch).unwrap();
    let password = scratch.join("admin-password");
    std::fs::write(&password, hub.admin_password("gendo")).unwrap();
    let mut command = hub.netns.command("python3");
    command
        .arg(root().join("tests/rehearsal/scenario.py"))
        .arg("--homeserver=http://127.0.0.1:8008")
        .arg(format!("--server-name={}", hub.appliance.matrix.server_name))
        .arg(format!("--admin-password-file={}", password.display()))
        .arg(format!(
            "--registration-secret-file={}",
            hub.state_dir()
                .join("secrets/_host/synapse/registration-shared-secret")
                .display()
        ))
        .arg(format!("--standin-log={}", hub.standin_log_path().display()))
        .arg(format!("--json={}", scratch.join(format!("{name}.json")).display()));
    for agent in agents {
        command.arg(format!("--agent={agent}={}", model_of(hub, agent)));
    }
    for step in steps {
        command.arg(format!("--step={step}"));
    }
    command.args(extra);
    let started = std::time::Instant::now();
    let output = command.output().expect("failed to run scenario.py");
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{name}: scenario.py failed ({}):\n{stderr}\n{}",
        output.status,
        hub.all_reports()
    );
    eprintln!("rehearsal: {name} passed in {:.1} s", started.elapsed().as_secs_f64());
}

/// Issue 13 item 5: the agents' answers came through the stand-in inside
/// the inference sandbox (its generated options and runtime, minus
/// nvproxy), at the generated address.
fn answers_came_through_the_inference_sandbox(hub: &Hub, agent: &str) {
    let log = hub.standin_log();
    let model = model_of(hub, agent);
    assert!(
        log.lines().any(|l| l.contains(&model)),
        "the inference sandbox's stand-in logged no request for {agent}'s model {model}:\n{log}"
    );
    let inference = hub.appliance.inference.as_ref().unwrap();
    let url = hub.appliance.agents[agent].inference_url.clone().unwrap();
    assert!(url.contains(&inference.bind_address.to_string()), "{url}");
    let (_, sandbox) = hub.appliance.sandbox("ollama").unwrap();
    assert!(hub.is_running(&sandbox.name));
    eprintln!(
        "rehearsal: {agent} reached the stand-in in sandbox `ollama` ({}, runtime {} minus nvproxy) at {url}",
        sandbox.image, sandbox.runtime
    );
}

/// Issue 13 item 5: Hermes' own `web_search`, run in casper's sandbox with
/// its generated environment (`SEARXNG_URL`) and config, asks the SearXNG
/// sandbox across the bridge, whose engine reads the test web host: the
/// result is the test page.
fn crawler_searches_through_the_search_sandbox(hub: &Hub) {
    let script = "from tools.web_tools import web_search_tool; print(web_search_tool('rehearsal', limit=3))";
    let output = hub
        .daemon
        .docker(&["exec", "casper", "/opt/hermes/bin/python", "-c", script]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "web_search printed no JSON ({e}): {stdout}{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            hub.container_report("searxng")
        )
    });
    let first = &result["data"]["web"][0];
    assert_eq!(
        first["title"],
        hub::WEB_TITLE,
        "{result}\n{}",
        hub.container_report("searxng")
    );
    assert_eq!(first["url"], hub::web_url("index.html"), "{result}");
    eprintln!("rehearsal: casper's web_search answered from the test page through sandbox `searxng`: {first}");
}

/// The generated egress holds under gVisor, tried from casper's sandbox
/// (Hermes has Python): a direct connection to "the internet" (the test
/// web host) is refused by the generated firewall, the egress proxy fetches
/// the public page for it, and refuses a private address (Synapse on the
/// overlay address) by its deny list.
fn egress_holds(hub: &Hub, sandbox: &str) {
    let proxy = format!(
        "http://{}:{}",
        hub.hub().network_address,
        agent_appliance::generator::model::PROXY_PORT
    );
    let private = format!("http://{}:8008/", hub.hub().overlay_address.unwrap());
    let script = format!(
        r#"import json, socket, urllib.request, urllib.error
def direct():
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect(("{address}", {port})); return "connected"
    except Exception as e:
        return "refused: %r" % e
def proxied(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({{"http": "{proxy}"}}))
    try:
        return "status %d" % opener.open(url, timeout=20).status
    except urllib.error.HTTPError as e:
        return "status %d" % e.code
    except Exception as e:
        return "error %r" % e
print(json.dumps({{"direct": direct(), "public": proxied("{public}"), "private": proxied("{private}")}}))
"#,
        address = hub::WEB_ADDRESS,
        port = hub::WEB_PORT,
        public = hub::web_url("index.html"),
    );
    let output = hub.daemon.docker(&["exec", sandbox, "python3", "-c", &script]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "the egress probe printed no JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let direct = seen["direct"].as_str().unwrap_or_default();
    assert!(
        direct.starts_with("refused"),
        "{sandbox} reached the internet directly: {seen}"
    );
    assert_eq!(
        seen["public"],
        "status 200",
        "the proxy did not fetch the public page: {seen}\n{}",
        hub.proxy_log()
    );
    assert_eq!(
        seen["private"], "status 403",
        "the proxy did not refuse a private address: {seen}"
    );
    eprintln!("rehearsal: {sandbox}'s egress as generated: {seen}");
}

/// melchior's browser fetched the test page through the egress proxy:
/// squid's access log has the request from melchior's address. What else
/// melchior asked the proxy for (OpenClaw's public feeds) is printed.
fn browser_went_through_the_egress_proxy(hub: &Hub, agent: &str) {
    let (_, sandbox) = hub.appliance.sandbox(agent).unwrap();
    let address = sandbox.network.as_ref().unwrap().address.to_string();
    let log = hub.proxy_log();
    let mine: Vec<&str> = log
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some(address.as_str()))
        .collect();
    let page: Vec<&&str> = mine.iter().filter(|l| l.contains(hub::WEB_HOST)).collect();
    assert!(
        page.iter().any(|l| l.contains("/200 ")),
        "the proxy logged no fetch of the test page from {agent} ({address}):\n{log}"
    );
    eprintln!(
        "rehearsal: {agent}'s browser went through the egress proxy: {}",
        page[0]
    );
    // What else it asked for, once per target: (count, squid's result).
    let mut others: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for line in mine.iter().filter(|l| !l.contains(hub::WEB_HOST)) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (status, target) = (
            fields.get(3).copied().unwrap_or_default(),
            fields.get(6).copied().unwrap_or_default(),
        );
        others.entry(target).or_insert((0, status)).0 += 1;
    }
    for (target, (count, status)) in &others {
        eprintln!("rehearsal: {agent} also asked the egress proxy for {target} ({count}x, {status})");
    }
}

/// The outside names each sandbox asked the bridge's resolver for (it
/// forwards them to "the internet's DNS", which knows only the test web
/// host), from its query log.
fn names_asked_of_the_resolver(hub: &Hub) {
    let addresses: BTreeMap<String, String> = hub
        .sandboxes()
        .iter()
        .filter_map(|s| Some((s.network.as_ref()?.address.to_string(), s.name.clone())))
        .chain([(
            hub.hub().network_address.to_string(),
            "the host (squid, for the sandboxes)".to_string(),
        )])
        .collect();
    let log = hub.dns_log();
    let mut asked: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for line in log.lines() {
        // dnsmasq: `query[A] NAME from ADDRESS`
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| w.starts_with("query[")) else {
            continue;
        };
        let (Some(name), Some(from)) = (words.get(at + 1), words.get(at + 3)) else {
            continue;
        };
        if *name != hub::WEB_HOST {
            let who = addresses.get(*from).map_or(*from, String::as_str);
            asked.entry(who).or_default().insert(name);
        }
    }
    for (who, names) in &asked {
        eprintln!("rehearsal: {who} asked the resolver for {names:?} (unknown to the namespace's DNS)");
    }
}

/// Issue 13 item 5: Hermes' own `web_extract`, run in casper's sandbox with
/// its generated environment (`TAVILY_BASE_URL`, the key from the host's
/// key file) and config, asks the `webextract` sandbox across the bridge,
/// which fetches the test web host's page through the egress proxy and
/// returns its text. Hermes' own refusal of private targets stays on (the
/// test web host's address is globally routable).
fn crawler_extracts_through_the_extract_sandbox(hub: &Hub) {
    let page = hub::web_url("index.html");
    let script = format!(
        "import asyncio; from tools.web_tools import web_extract_tool; print(asyncio.run(web_extract_tool([{page:?}])))"
    );
    let output = hub
        .daemon
        .docker(&["exec", "casper", "/opt/hermes/bin/python", "-c", &script]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let extract = agent_appliance::generator::model::EXTRACT_SANDBOX;
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "web_extract printed no JSON ({e}): {stdout}{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            hub.container_report(extract)
        )
    });
    let first = &result["results"][0];
    assert_eq!(
        first["error"],
        serde_json::Value::Null,
        "{result}\n{}",
        hub.container_report(extract)
    );
    assert_eq!(first["title"], hub::WEB_TITLE, "{result}");
    assert!(
        first["content"]
            .as_str()
            .is_some_and(|c| c.contains("Served inside the rehearsal's network namespace.")),
        "{result}"
    );
    let (_, sandbox) = hub.appliance.sandbox(extract).unwrap();
    assert!(hub.is_running(&sandbox.name));
    eprintln!(
        "rehearsal: casper's web_extract read {page} through sandbox `{extract}` ({}, runtime {}): {first}",
        sandbox.image, sandbox.runtime
    );
}

/// `kill -9` of the agent's container, then what the NixOS unit does on
/// failure (`docker rm -f`, the same `docker run`): it answers again
/// (issue 10 item 4's stale pid file included).
fn comes_back_after_kill(hub: &Hub, admin: &Member, agent: &str) {
    let sandbox = hub.sandboxes().into_iter().find(|s| s.name == agent).unwrap();
    let kill = hub.daemon.docker(&["kill", "--signal=KILL", agent]);
    crate::support::assert_succeeded("docker kill", &kill);
    let _ = hub.daemon.docker(&["rm", "-f", agent]);
    if agent_kind(hub, agent) == Some(AgentKind::Openclaw) {
        owners_look_alive(hub, &sandbox);
    }
    hub.start_sandbox(&sandbox);
    let (body, seconds, _) = first_answer(hub, admin, agent);
    eprintln!("rehearsal: {agent} answered {seconds:.1} s after kill -9: {body}");
}

fn agent_kind(hub: &Hub, name: &str) -> Option<AgentKind> {
    hub.appliance.agents.get(name).map(|a| a.kind)
}

/// The ownership records the killed OpenClaw left on its volume (agent
/// database leases, process-held state leases such as the gateway
/// owner's, the gateway's lock files), made to look held by a live
/// process: their start time is removed, so OpenClaw can only go by the PID
/// (and the command line), and PID 2 is the new gateway. That is what
/// happens by chance when the dead owner's PID and gVisor's boot-relative
/// start time both repeat in the new container (CI saw "Agent main
/// database is still open in process 2", then "Another gateway (pid 2)
/// already owns this state directory", then "Another Gateway owner lease
/// is still active for this state directory"); here it happens every
/// time, so the image's entry point must remove them
/// (nix/packages/openclaw-start.sh). Done as the image's user with its own
/// Node, under runc: only those files are touched.
fn owners_look_alive(hub: &Hub, sandbox: &Sandbox) {
    let volume = sandbox
        .volumes
        .iter()
        .find(|v| v.target == "/home/node/.openclaw")
        .expect("OpenClaw keeps its state in a volume");
    let script = r#"
const fs = require("node:fs");
const { DatabaseSync } = require("node:sqlite");
const db = new DatabaseSync("/state/state/openclaw.sqlite");
const leases = db.prepare("SELECT agent_id, owner_pid, owner_start_time FROM agent_database_leases").all();
db.prepare("UPDATE agent_database_leases SET owner_start_time = NULL").run();
const stateLeases = [];
for (const row of db.prepare("SELECT scope, lease_key, payload_json FROM state_leases").all()) {
  const payload = JSON.parse(row.payload_json ?? "null");
  if (!payload?.owner?.pid) continue;
  stateLeases.push({ scope: row.scope, pid: payload.owner.pid, startedAt: payload.owner.startedAt });
  payload.owner.startedAt = null;
  db.prepare("UPDATE state_leases SET payload_json = ? WHERE scope = ? AND lease_key = ?")
    .run(JSON.stringify(payload), row.scope, row.lease_key);
}
db.close();
const dir = "/state/tmp/openclaw-1000";
const locks = {};
for (const name of fs.readdirSync(dir).filter((n) => /^gateway\..*\.lock$/.test(n))) {
  const payload = JSON.parse(fs.readFileSync(`${dir}/${name}`, "utf8"));
  locks[name] = { pid: payload.pid, startTime: payload.startTime };
  delete payload.startTime;
  fs.writeFileSync(`${dir}/${name}`, JSON.stringify(payload));
}
console.log(JSON.stringify({ leases, stateLeases, locks }));
"#;
    let mount = format!("type=volume,src={},dst=/state", volume.name);
    let output = hub.daemon.docker(&[
        "run",
        "--rm",
        "--runtime=runc",
        "--network=none",
        "--user=1000:1000",
        "--mount",
        &mount,
        "--entrypoint=node",
        &sandbox.image,
        "--no-warnings",
        "-e",
        script,
    ]);
    assert!(
        output.status.success(),
        "editing {}'s ownership records: {}",
        sandbox.name,
        String::from_utf8_lossy(&output.stderr)
    );
    let left: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (what, records) in [
        ("agent database lease", &left["leases"]),
        ("process-held state lease", &left["stateLeases"]),
        ("gateway lock", &left["locks"]),
    ] {
        let count = records
            .as_array()
            .map(Vec::len)
            .or(records.as_object().map(serde_json::Map::len));
        assert!(
            count.unwrap_or(0) > 0,
            "the killed {} left no {what}, so this step proves nothing: {left}",
            sandbox.name
        );
    }
    eprintln!(
        "rehearsal: {}'s ownership records left by the kill, now without start time: {left}",
        sandbox.name
    );
}

#[test]
fn rehearsal() {
    let Some((mut hub, admin, watch)) = bring_up() else {
        return;
    };
    let running: Vec<String> = hub.sandboxes().iter().map(|s| s.name.clone()).collect();
    let has = |name: &str| running.iter().any(|r| r == name);
    // Every agent answers a mention, through the stand-in.
    for agent in ["casper", "melchior", "balthasar"].into_iter().filter(|a| has(a)) {
        let (body, seconds, first) = first_answer(&hub, &admin, agent);
        eprintln!("rehearsal: {agent} answered after {seconds:.1} s: {body}");
        assert!(
            body.contains("[stand-in]"),
            "{agent}'s answer did not come from the stand-in: {body}\n{}",
            hub.all_reports()
        );
        // Issue 10 item 4: with its home room in the env file, Hermes
        // answers without a home-channel notice first.
        let notices: Vec<String> = bodies_from(&hub, &admin, &first, agent)
            .into_iter()
            .filter(|b| b.contains("No home channel"))
            .collect();
        assert!(notices.is_empty(), "{agent} sent a home-channel notice: {notices:?}");
        if has("ollama") {
            answers_came_through_the_inference_sandbox(&hub, agent);
        }
    }
    if has("casper") {
        resolver_works(&hub, "casper");
    }
    let mut watch = Some(watch);
    if has("casper") && has("searxng") {
        crawler_searches_through_the_search_sandbox(&hub);
    }
    if has("casper") && has(agent_appliance::generator::model::EXTRACT_SANDBOX) {
        crawler_extracts_through_the_extract_sandbox(&hub);
    }
    if has("casper-exec")
        && let Some(watch) = &watch
    {
        warden::code_waits_for_approval(&hub, &admin, watch);
        code_ran_in_the_code_sandbox(&hub);
    }
    if has("casper") {
        egress_holds(&hub, "casper");
    }
    if has("balthasar") {
        picoclaw_runs_gh_from_chat(&hub, &admin);
        token_stays_outside_balthasar(&hub);
        if let Some(watch) = &watch {
            warden::egress_grants_from_the_room(&hub, &admin, watch);
        }
    }
    if has("casper") && has("melchior") {
        scenario(&hub);
        browser_went_through_the_egress_proxy(&hub, "melchior");
    }
    names_asked_of_the_resolver(&hub);
    let agents: Vec<&str> = ["casper", "melchior", "balthasar"]
        .into_iter()
        .filter(|a| has(a))
        .collect();
    if let Some(watch) = &mut watch {
        warden::halts_and_resumes(&hub, &admin, &agents, watch);
        warden::refuses_strangers_and_agents(&hub, &admin, watch);
        if has("melchior") {
            warden::breaks_a_loop(&hub, &admin, watch);
            warden::vm_test_step(&hub, &agents);
        }
        if has("balthasar") {
            warden::stops_and_starts(&hub, &admin, watch, "balthasar");
        }
    }
    for agent in &agents {
        comes_back_after_kill(&hub, &admin, agent);
    }
    if let Some(watch) = watch {
        warden::reported_the_kills(&hub, watch, &agents);
    }
    bootstrap_rerun_changes_nothing(&hub);
    // Last: these restart the agents, which the warden would report.
    if has("casper") {
        upgrade::failing_upgrade_is_rolled_back(&hub, &running);
        let (body, seconds, _) = first_answer(&hub, &admin, "casper");
        eprintln!("rehearsal: casper answered after the rollback, in {seconds:.1} s: {body}");
        assert!(body.contains("[stand-in]"), "{body}\n{}", hub.all_reports());
    }
    restore::restore_brings_back_the_agents_state(&mut hub, &admin, &agents);
}

/// Every file under the state dir: mode, owner, bytes, mtime.
fn state_snapshot(hub: &Hub) -> std::collections::BTreeMap<String, (u32, u32, i64, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(hub.state_dir())
        .sort_by_file_name()
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() != ".bootstrap.lock")
        .map(|e| {
            let meta = e.metadata().unwrap();
            let bytes = if meta.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                e.path().display().to_string(),
                (meta.mode(), meta.uid(), meta.mtime(), bytes),
            )
        })
        .collect()
}

/// With the hub running, `appliance bootstrap` again changes no byte,
/// mode, owner or mtime of the state dir.
fn bootstrap_rerun_changes_nothing(hub: &Hub) {
    let before = state_snapshot(hub);
    let output = hub.bootstrap(&[]);
    assert!(
        output.status.success(),
        "bootstrap rerun failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let after = state_snapshot(hub);
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "bootstrap rerun changed {changed:?}");
    eprintln!("rehearsal: bootstrap rerun changed nothing ({} entries)", before.len());
}
