//! The rehearsal's benchmark (issue 10, must have 6), run by
//! `scripts/bench-rehearsal.sh` (`cargo bench --bench rehearsal`): the hub of the rehearsal, then per agent
//! the same container (same image, same generated options) started again and
//! again under its generated gVisor runtime and under runc, alternating, each
//! time measuring start to ready, mention-to-reply round trips and memory.
//! Optional variants (extra runsc flags) run in the same alternation, for
//! finding where the time goes. Writes JSON (`BENCH_JSON`) that the script
//! turns into tables for docs/benchmarks.md.
//!
//! Times come from Synapse's `origin_server_ts` of the mention and the reply
//! (one clock, millisecond resolution), not from the client's polling. The
//! stand-in model server answers at once, so a round trip is the agent and
//! its sandbox (plus Synapse), not a model.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_appliance::generator::model::Sandbox;
use agent_appliance::on_host::bootstrap::client::{Client, segment};
use serde_json::{Value, json};

// The rehearsal's own modules, at the same crate paths as in its test
// binary (tests/rehearsal/main.rs); what the benchmark leaves unused there
// is not dead code.
#[allow(dead_code)]
#[path = "../tests/rehearsal/hub.rs"]
mod hub;
#[allow(dead_code)]
#[path = "../tests/rehearsal/images.rs"]
mod images;
#[allow(dead_code)]
#[path = "../tests/rehearsal/matrix.rs"]
mod matrix;
#[allow(dead_code)]
#[path = "../tests/rehearsal/setup.rs"]
mod setup;
#[path = "../tests/support/mod.rs"]
mod support;
#[allow(dead_code)]
#[path = "../tests/rehearsal/warden.rs"]
mod warden;

#[path = "rehearsal/cpu.rs"]
mod cpu;
#[path = "rehearsal/load.rs"]
mod load;
#[path = "rehearsal/profile.rs"]
mod profile;
#[path = "rehearsal/spec.rs"]
mod spec;

use crate::hub::{Hub, Services};
use crate::matrix::Member;
use crate::support::root;

/// The agents measured: (sandbox, what it is), melchior = OpenClaw,
/// casper = Hermes, balthasar = PicoClaw.
const AGENTS: &[(&str, &str)] = &[
    ("casper", "Hermes"),
    ("melchior", "OpenClaw"),
    ("balthasar", "PicoClaw"),
];

/// How long an agent may take to answer its first mention after start.
const READY_WITHIN: Duration = Duration::from_secs(300);
/// How long one reply may take (a loaded machine makes it long; a reply
/// that takes longer is counted as a timeout, not measured).
const REPLY_WITHIN: Duration = Duration::from_secs(120);
/// How often a starting agent is mentioned until it answers: the
/// resolution of start to ready for an agent that ignores what was sent
/// before it connected (Hermes answers those too, later).
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long an agent's CPU is sampled once it has nothing to answer.
const IDLE_SAMPLE: Duration = Duration::from_secs(30);

/// The rehearsal binary's scenario runner (tests/rehearsal/main.rs), which
/// warden.rs's VM-test step calls; the bench runs no scenario step.
#[allow(dead_code)]
fn run_scenario(_: &Hub, name: &str, _: &[&str], _: &[&str], _: &[String]) {
    unreachable!("the bench runs no scenario step ({name})")
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A client of the hub's Synapse (from inside its namespace) that gives
/// up `within` from now.
fn client_within(within: Duration) -> Client {
    Client::new(
        "http://127.0.0.1:8008",
        Instant::now() + within,
        Duration::from_secs(30),
    )
}

/// The event and the room's messages after it (oldest first), as the admin
/// sees them.
fn context(hub: &Hub, admin: &Member, event: &str) -> (Value, Vec<Value>) {
    let token = admin.token.clone();
    let path = format!(
        "/_matrix/client/v3/rooms/{}/context/{}?limit=300",
        segment(&admin.room_id),
        segment(event)
    );
    hub.netns.run(move || {
        let reply = client_within(Duration::from_secs(60)).get(&path, Some(&token)).unwrap();
        assert!(reply.ok(), "context: {}", reply.describe());
        let after = reply.body["events_after"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["type"] == "m.room.message")
            .collect();
        (reply.body["event"].clone(), after)
    })
}

fn timestamp(event: &Value) -> i64 {
    event["origin_server_ts"]
        .as_i64()
        .expect("events carry origin_server_ts")
}

fn body(event: &Value) -> &str {
    event["content"]["body"].as_str().unwrap_or_default()
}

/// The first message from `sender` after `event` whose body contains
/// `needle`, waiting up to `within`.
fn reply_to(hub: &Hub, admin: &Member, event: &str, sender: &str, needle: &str, within: Duration) -> Option<Value> {
    let started = Instant::now();
    while started.elapsed() < within {
        let (_, after) = context(hub, admin, event);
        if let Some(found) = after
            .into_iter()
            .find(|e| e["sender"] == sender && body(e).contains(needle))
        {
            return Some(found);
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    None
}

/// The sandbox's generated `docker run` arguments with its runtime replaced
/// by `runtime`, and under any runtime but the generated one its named
/// volumes replaced by `<volume>-<runtime>`: nothing else changes.
///
/// Each runtime keeps its own state because OpenClaw's SQLite state, left
/// by a runc run, could not be opened by the next gVisor run on the same
/// volume ("Gateway failed to start: database is locked", every time in two
/// benches); an appliance never switches a volume between runtimes. So a
/// runc agent's code sandbox (which mounts the generated volume) does not
/// see its files: the bench only measures starts and replies.
fn run_args_with_runtime(hub: &Hub, sandbox: &Sandbox, runtime: &str) -> Vec<String> {
    let mut args = vec!["run".to_string(), "-d".into(), format!("--name={}", sandbox.name)];
    let generated = hub.run_args(sandbox);
    assert!(
        generated.iter().any(|a| a == &format!("--runtime={}", sandbox.runtime)),
        "{} has no --runtime option: {generated:?}",
        sandbox.name
    );
    let own_volume = |arg: String| match arg.strip_prefix("--volume=") {
        Some(volume) if runtime != sandbox.runtime => {
            match sandbox
                .volumes
                .iter()
                .find(|v| volume.starts_with(&format!("{}:", v.name)))
            {
                Some(named) => format!("--volume={}-{runtime}{}", named.name, &volume[named.name.len()..]),
                None => arg,
            }
        }
        _ => arg,
    };
    args.extend(generated.into_iter().map(|a| {
        if a.starts_with("--runtime=") {
            format!("--runtime={runtime}")
        } else {
            own_volume(a)
        }
    }));
    args.push(sandbox.image.clone());
    args.extend(sandbox.command.iter().cloned());
    args
}

fn docker_ok(hub: &Hub, args: &[&str]) -> String {
    let output = hub.daemon.docker(args);
    assert!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Memory of one container as seen from the host: the proportional set
/// size (PSS, so shared pages are not counted twice) summed over the
/// container's processes (`cpu::container_processes`: its memory cgroup
/// and runsc's gofer; not containerd's shim, the same for both runtimes,
/// nor a `runsc debug` of the bench's); and the cgroup's own usage (v1
/// `memory.usage_in_bytes`: anonymous, shmem and page cache).
fn memory(hub: &Hub, name: &str) -> Value {
    let found = cpu::container_processes(hub, name, "memory");
    let cgroup = found.cgroup;
    let pids: Vec<i32> = found.in_cgroup.into_iter().chain(found.outside).collect();
    let mut pss_kib = 0u64;
    let mut rss_kib = 0u64;
    let mut processes: Vec<String> = Vec::new();
    for pid in &pids {
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |key: &str| -> u64 {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        pss_kib += field("Pss:");
        rss_kib += field("Rss:");
        processes.push(cpu::process_kind(*pid));
    }
    processes.sort();
    processes.dedup();
    let read = |file: &str| -> Option<u64> {
        let dir = cgroup.as_ref()?;
        fs::read_to_string(Path::new(dir).join(file)).ok()?.trim().parse().ok()
    };
    let stat = cgroup
        .as_ref()
        .map(|dir| fs::read_to_string(Path::new(dir).join("memory.stat")).unwrap_or_default())
        .unwrap_or_default();
    let stat_mib = |key: &str| -> Option<f64> {
        stat.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse::<u64>().ok())
            .map(|b| b as f64 / 1048576.0)
    };
    json!({
        "pss_mib": pss_kib as f64 / 1024.0,
        "cgroup_anon_mib": stat_mib("total_rss"),
        "cgroup_shmem_mib": stat_mib("total_shmem"),
        "cgroup_cache_mib": stat_mib("total_cache"),
        "rss_mib": rss_kib as f64 / 1024.0,
        "cgroup_usage_mib": read("memory.usage_in_bytes").map(|b| b as f64 / 1048576.0),
        "processes": processes,
        "cgroup": cgroup,
    })
}

/// A started agent's first answer.
struct Ready {
    /// From just before `docker run` to the first reply's server timestamp.
    ms: f64,
    /// The first probe, and how many were sent.
    first_probe: String,
    probes: usize,
}

/// Starts `sandbox` under `runtime` and mentions it every `PROBE_EVERY`
/// until it answers; or why not: dockerd's refusal (a variant's flags may
/// not combine) or the agent's exit.
/// Who approves casper's code execution cards while the bench waits for
/// an answer: `BENCH_APPROVE` (default `1h`, the longest standing
/// approval) or `0`, nobody (each card then expires after the warden's
/// approval timeout, and casper's start and first round trip wait for it:
/// Hermes' own Docker calls at a session's start are cards too,
/// docs/warden.md).
/// It holds the running warden (dropped with it).
struct Approver {
    watch: warden::Watch,
    duration: Option<String>,
    decided: Vec<String>,
}

impl Approver {
    fn from_env(watch: warden::Watch) -> Approver {
        let duration = std::env::var("BENCH_APPROVE").unwrap_or_else(|_| "1h".into());
        Approver {
            watch,
            duration: (!duration.is_empty() && duration != "0").then_some(duration),
            decided: Vec::new(),
        }
    }

    fn approve_new_cards(&mut self, hub: &Hub) {
        if let Some(duration) = &self.duration {
            self.watch.approve_new_cards(hub, &mut self.decided, duration);
        }
    }
}

fn start_to_ready(
    hub: &Hub,
    admin: &Member,
    sandbox: &Sandbox,
    runtime: &str,
    user: &str,
    approver: &mut Approver,
    mut profile: Option<&mut profile::Session>,
) -> Result<Ready, String> {
    // A clean stop first: OpenClaw counts unclean restarts and, after a few,
    // its crash-loop breaker stops starting the Matrix channel (seen after
    // three `docker rm -f` in a row). Not yet verified to be enough.
    let _ = hub.daemon.docker(&["stop", "-t", "30", &sandbox.name]);
    let _ = hub.daemon.docker(&["rm", "-f", &sandbox.name]);
    let mut args = run_args_with_runtime(hub, sandbox, runtime);
    if let Some(profile) = &profile {
        // After `run -d --name=…`, before the image.
        args.splice(3..3, profile.args.iter().cloned());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let started_ms = now_ms();
    let started = Instant::now();
    let run = hub.daemon.docker(&refs);
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).trim().to_string());
    }
    // A profiled start can be slower (OpenClaw's under gVisor: up to ~1.6x
    // with Node's profiler at a sample per 10 ms, ~3x at one per ms).
    let within = match profile.as_deref_mut() {
        Some(profile) => {
            profile.started(hub, started_ms);
            READY_WITHIN * 2
        }
        None => READY_WITHIN,
    };
    let first = admin.mention(hub, user, "are you up? probe-0");
    let mut probes = 1;
    while started.elapsed() < within {
        if !hub.is_running(&sandbox.name) {
            return Err(format!(
                "exited before it answered\n{}",
                hub.container_report(&sandbox.name)
            ));
        }
        let (_, after) = context(hub, admin, &first);
        if let Some(reply) = after
            .iter()
            .find(|e| e["sender"] == user && body(e).contains("[stand-in]"))
        {
            if let Some(profile) = profile {
                profile.ready(hub);
            }
            return Ok(Ready {
                ms: (timestamp(reply) - started_ms) as f64,
                first_probe: first,
                probes,
            });
        }
        if started.elapsed() > PROBE_EVERY * probes as u32 {
            admin.mention(hub, user, &format!("are you up? probe-{probes}"));
            probes += 1;
        }
        approver.approve_new_cards(hub);
        std::thread::sleep(Duration::from_millis(150));
    }
    panic!(
        "{} did not answer under {runtime} within {} s\n{}",
        sandbox.name,
        within.as_secs(),
        hub.container_report(&sandbox.name)
    );
}

/// Waits until the agent has answered every probe (Hermes answers those
/// sent while it started, one by one) or sent nothing for 15 s (OpenClaw
/// skips them), at most three minutes, so the round trips that follow do
/// not queue behind them. Returns the probes answered.
fn settle(hub: &Hub, admin: &Member, user: &str, ready: &Ready) -> usize {
    let started = Instant::now();
    let mut seen = 0;
    let mut last_change = Instant::now();
    while started.elapsed() < Duration::from_secs(180) && last_change.elapsed() < Duration::from_secs(15) {
        let (_, after) = context(hub, admin, &ready.first_probe);
        let count = after
            .iter()
            .filter(|e| e["sender"] == user && body(e).contains("[stand-in]"))
            .count();
        if count >= ready.probes {
            return count;
        }
        if count != seen {
            seen = count;
            last_change = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    seen
}

/// `count` mentions, one at a time; each round trip in ms between the
/// mention's and the reply's server timestamps, and how many got no reply
/// within `REPLY_WITHIN`.
fn round_trips(hub: &Hub, admin: &Member, agent: &str, user: &str, tag: &str, count: usize) -> (Vec<f64>, usize) {
    let mut trips = Vec::new();
    let mut timeouts = 0;
    for i in 0..count {
        let needle = format!("{tag}x{i}");
        let event = admin.mention(hub, user, &format!("please answer {needle}"));
        match reply_to(hub, admin, &event, user, &needle, REPLY_WITHIN) {
            Some(reply) => {
                let (mention, _) = context(hub, admin, &event);
                trips.push((timestamp(&reply) - timestamp(&mention)) as f64);
            }
            None => {
                eprintln!(
                    "bench: {agent} did not answer {needle} within {} s",
                    REPLY_WITHIN.as_secs()
                );
                timeouts += 1;
            }
        }
    }
    (trips, timeouts)
}

/// A runtime under test: the agent's generated gVisor runtime, runc, or a
/// variant of the generated runtime with extra runsc flags.
#[derive(Clone)]
struct Config {
    label: String,
    runtime: String,
    /// runsc flags replacing or added to the generated ones (variants).
    flags: Vec<String>,
}

/// `BENCH_VARIANTS="label:--flag=v --flag2=v;label2:..."`.
fn variants() -> Vec<(String, Vec<String>)> {
    std::env::var("BENCH_VARIANTS")
        .unwrap_or_default()
        .split(';')
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            let (label, flags) = v.split_once(':').expect("BENCH_VARIANTS entries are label:flags");
            (
                label.trim().to_string(),
                flags.split_whitespace().map(String::from).collect(),
            )
        })
        .collect()
}

/// The generated runtime's arguments with `extra` replacing flags of the
/// same name or added.
fn with_flags(base: &[Value], extra: &[String]) -> Vec<Value> {
    let name = |a: &str| a.split('=').next().unwrap_or(a).to_string();
    let mut args: Vec<Value> = base
        .iter()
        .filter(|a| !extra.iter().any(|e| name(e) == name(a.as_str().unwrap_or_default())))
        .cloned()
        .collect();
    args.extend(extra.iter().map(|e| json!(e)));
    args
}

/// Adds the variants' runtimes to the running dockerd: rewrites its config
/// file and sends SIGHUP (dockerd reloads `runtimes` live), so the hub's
/// daemon stays as started for everything else.
fn add_runtimes(hub: &Hub, configs: &[Config], base_runtime: &str) {
    let path = hub.daemon.dir().join("daemon.json");
    let mut settings: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let base = settings["runtimes"][base_runtime]["runtimeArgs"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no runtime {base_runtime} in {}", path.display()));
    for config in configs.iter().filter(|c| !c.flags.is_empty()) {
        settings["runtimes"][&config.runtime] =
            json!({"path": "runsc", "runtimeArgs": with_flags(&base, &config.flags)});
    }
    fs::write(&path, serde_json::to_string_pretty(&settings).unwrap()).unwrap();
    let pid: i32 = fs::read_to_string(hub.daemon.dir().join("docker.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let info = docker_ok(hub, &["info", "--format", "{{json .Runtimes}}"]);
    for config in configs.iter().filter(|c| !c.flags.is_empty()) {
        assert!(
            info.contains(&config.runtime),
            "dockerd did not load {}: {info}",
            config.runtime
        );
    }
}

fn configs_for(sandbox: &Sandbox) -> Vec<Config> {
    let mut configs = vec![
        Config {
            label: format!("gvisor ({})", sandbox.runtime),
            runtime: sandbox.runtime.clone(),
            flags: Vec::new(),
        },
        Config {
            label: "runc".into(),
            runtime: "runc".into(),
            flags: Vec::new(),
        },
    ];
    for (label, flags) in variants() {
        configs.push(Config {
            label: format!("{} {}", sandbox.runtime, flags.join(" ")),
            runtime: format!("bench-{}-{label}", sandbox.runtime),
            flags,
        });
    }
    configs
}

/// One agent: `rounds` rounds; in each, every config once (the order
/// rotating between rounds), each start followed by `replies` round trips
/// and a memory sample.
fn bench_agent(
    hub: &Hub,
    admin: &Member,
    sandbox: &Sandbox,
    rounds: usize,
    replies: usize,
    approver: &mut Approver,
    kind: &str,
) -> Value {
    let user = hub.appliance.agents[&sandbox.name].user_id.clone();
    let configs = configs_for(sandbox);
    let profiler = profile::Profiler::from_env();
    add_runtimes(hub, &configs, &sandbox.runtime);
    let mut samples: Vec<Value> = Vec::new();
    for round in 0..rounds {
        let mut order = configs.clone();
        order.rotate_left(round % configs.len());
        for config in &order {
            let index = configs.iter().position(|c| c.runtime == config.runtime).unwrap();
            let load_before = load_average();
            let mut profile = profiler.as_ref().map(|p| {
                p.session(
                    &sandbox.name,
                    kind,
                    &config.runtime,
                    round,
                    profile::profiles_sentry(&config.flags),
                )
            });
            let ready = match start_to_ready(hub, admin, sandbox, &config.runtime, &user, approver, profile.as_mut()) {
                Ok(ready) => ready,
                Err(refused) => {
                    eprintln!("bench: {} {} failed: {refused}", sandbox.name, config.label);
                    if let Some(profile) = profile {
                        profile.failed(&refused);
                    }
                    samples.push(
                        json!({"config": config.label, "runtime": config.runtime, "round": round, "refused": refused}),
                    );
                    continue;
                }
            };
            let cpu_ready_s = cpu::container_cpu_s(hub, &sandbox.name);
            let cpu_split_ready = cpu::container_cpu_split(hub, &sandbox.name);
            let late = settle(hub, admin, &user, &ready);
            let ready_ms = ready.ms;
            // The stand-in echoes `tag-<alphanumeric>` tokens.
            let tag = format!("tag-{}c{index}r{round}", sandbox.name);
            if let Some(profile) = profile.as_mut() {
                profile.trips_begin(hub);
            }
            let cpu_before_trips = cpu::container_cpu_s(hub, &sandbox.name);
            let cpu_split_before_trips = cpu::container_cpu_split(hub, &sandbox.name);
            let (trips, timeouts) = round_trips(hub, admin, &sandbox.name, &user, &tag, replies);
            if let Some(profile) = profile.as_mut() {
                profile.trips_end(hub, trips.len());
            }
            let cpu_split_after_trips = cpu::container_cpu_split(hub, &sandbox.name);
            // The agent's CPU per mention answered, idle time between
            // them included (a sandbox's own background work is its cost).
            let cpu_per_trip_s = match (cpu_before_trips, cpu::container_cpu_s(hub, &sandbox.name)) {
                (Some(before), Some(after)) if !trips.is_empty() => Some((after - before) / trips.len() as f64),
                _ => None,
            };
            let memory = memory(hub, &sandbox.name);
            if let Some(profile) = profile {
                profile.finish(hub);
            }
            eprintln!(
                "bench: {} {} round {round}: ready {:.1} s ({cpu_ready_s:?} CPU s), round trips {:?} ms ({cpu_per_trip_s:?} CPU s each), memory {}, load {load_before} -> {}, probes answered {late}/{}, timeouts {timeouts}",
                sandbox.name,
                config.label,
                ready_ms / 1000.0,
                trips,
                memory,
                load_average(),
                ready.probes
            );
            samples.push(json!({
                "config": config.label,
                "runtime": config.runtime,
                "round": round,
                "ready_ms": ready_ms,
                "cpu_ready_s": cpu_ready_s,
                "round_trips_ms": trips,
                "cpu_per_round_trip_s": cpu_per_trip_s,
                "cpu_split_at_ready": cpu_split_ready,
                "cpu_split_before_round_trips": cpu_split_before_trips,
                "cpu_split_after_round_trips": cpu_split_after_trips,
                "memory": memory,
                "load_before": load_before,
                "load_after": load_average(),
                "probes": ready.probes,
                "probes_answered": late,
                "round_trip_timeouts": timeouts,
            }));
        }
    }
    // Leave the agent as the hub runs it.
    let _ = hub.daemon.docker(&["rm", "-f", &sandbox.name]);
    hub.start_sandbox(sandbox);
    json!({"agent": sandbox.name, "runtime": sandbox.runtime, "samples": samples})
}

/// The hub of the rehearsal, timed: services (namespace, dockerd, bridge,
/// DNS, secrets, Synapse, bootstrap), then the images (a rehearsal-only
/// cost: the appliance has them in its Nix store), then the warden, then
/// every sandbox in dependency order until every agent has answered a
/// mention.
fn cold_start(spec_dir: &Path) -> Option<(Hub, Member, Value, Approver)> {
    if !crate::setup::tools_present() {
        return None;
    }
    let venv = crate::support::synapse::venv()?;
    spec::write_with_second_human(spec_dir);
    let started = Instant::now();
    let name = format!("rehearsal-{}", std::process::id());
    let hub = hub::start_from(&name, Services { synapse_venv: &venv }, spec_dir);
    let services_s = started.elapsed().as_secs_f64();
    let images_started = Instant::now();
    crate::setup::build_images(&hub);
    let images_s = images_started.elapsed().as_secs_f64();
    // The warden, as systemd orders it before the agent whose Docker is
    // its approval broker (casper); running, as on the appliance, with its
    // loop breaker.
    let mut approver = Approver::from_env(warden::watch(&hub));
    let admin = Member::login(&hub, "gendo", &format!("#magi:{}", hub.appliance.matrix.server_name));
    // The admin probes every agent every `PROBE_EVERY`: Synapse's default
    // message rate limit for a human (0.2/s after a burst of 10) would
    // stretch that to one probe in 5 s, and the measurement with it.
    load::lift_rate_limit(&hub, &format!("@gendo:{}", hub.appliance.matrix.server_name));
    // `BENCH_START=waves` (default) or `one-by-one`, as the rehearsal.
    let start = match std::env::var("BENCH_START").as_deref() {
        Ok("one-by-one") => crate::setup::Start::OneByOne,
        _ => crate::setup::Start::Waves,
    };
    let load = load_average();
    let busy = cpu::Busy::now();
    let sandboxes_started = Instant::now();
    let started_ms = now_ms();
    crate::setup::start_sandboxes(&hub, start);
    let started_s = sandboxes_started.elapsed().as_secs_f64();
    let together = ready_together(&hub, &admin, started_ms, &mut approver);
    let all_answering_s = sandboxes_started.elapsed().as_secs_f64();
    let mut cold = json!({
        "services_s": services_s,
        "images_s": images_s,
        "sandboxes_to_all_answering_s": all_answering_s,
        "sandboxes_started_s": started_s,
        "start": if start == crate::setup::Start::Waves { "waves" } else { "one-by-one" },
        "probe_every_s": PROBE_EVERY.as_secs_f64(),
        "agent_answered_s": together.answered,
        "agent_cpu_s_at_answer": together.cpu_s,
        "sandbox_cpu_s": cpu::every_container_cpu_s(&hub),
        "machine": busy.since(),
        "load_before": load,
        "load_after": load_average(),
        "cards_approved": approver.decided.len(),
    });
    cold["settled"] = settle_together(&hub, &admin);
    eprintln!("bench: cold start {cold}");
    Some((hub, admin, cold, approver))
}

/// Every agent mentioned every `PROBE_EVERY` until it answers, all at
/// once (not one after the other, with 30 s between mentions, as the
/// rehearsal's `first_answer` does): per agent, the seconds from
/// `started_ms` to its first reply's server timestamp.
fn ready_together(hub: &Hub, admin: &Member, started_ms: i64, approver: &mut Approver) -> Together {
    let anchor = admin.send(hub, json!({"msgtype": "m.text", "body": "bench: cold start"}));
    let mut answered = serde_json::Map::new();
    let mut cpu_s = serde_json::Map::new();
    let started = Instant::now();
    let mut probes = 0;
    let mut last_probe: Option<Instant> = None;
    while answered.len() < AGENTS.len() {
        assert!(
            started.elapsed() < READY_WITHIN,
            "not every agent answered within {} s: {answered:?}\n{}",
            READY_WITHIN.as_secs(),
            hub.all_reports()
        );
        let waiting: Vec<&str> = AGENTS
            .iter()
            .map(|(agent, _)| *agent)
            .filter(|agent| !answered.contains_key(*agent))
            .collect();
        if last_probe.is_none_or(|at| at.elapsed() >= PROBE_EVERY) {
            for agent in &waiting {
                assert!(hub.is_running(agent), "{agent} exited\n{}", hub.container_report(agent));
                let user = &hub.appliance.agents[*agent].user_id;
                admin.mention(hub, user, &format!("are you up? tag-cold{probes}"));
            }
            probes += 1;
            last_probe = Some(Instant::now());
        }
        approver.approve_new_cards(hub);
        let messages = load::messages_since(hub, admin, &anchor);
        for agent in waiting {
            let user = &hub.appliance.agents[agent].user_id;
            if let Some(reply) = messages
                .iter()
                .find(|e| e["sender"] == user.as_str() && body(e).contains("[stand-in]"))
            {
                answered.insert(
                    agent.to_string(),
                    json!((timestamp(reply) - started_ms) as f64 / 1000.0),
                );
                // Read within a poll (~0.3-1 s) of the reply: what the
                // agent's start cost until it answered.
                cpu_s.insert(agent.to_string(), json!(cpu::container_cpu_s(hub, agent)));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Together { answered, cpu_s }
}

/// When each agent first answered (seconds from the start) and the CPU
/// seconds its container had used by then.
struct Together {
    answered: serde_json::Map<String, Value>,
    cpu_s: serde_json::Map<String, Value>,
}

/// Waits until no agent has sent anything for 15 s (at most five
/// minutes, `load::quiet`), then samples each agent's CPU share over
/// `IDLE_SAMPLE` of quiet (1.0: one core busy all along). Returns the
/// seconds waited and the shares.
fn settle_together(hub: &Hub, admin: &Member) -> Value {
    let agents: Vec<(String, String)> = AGENTS
        .iter()
        .map(|(a, _)| (a.to_string(), hub.appliance.agents[*a].user_id.clone()))
        .collect();
    let settled_s = load::quiet(hub, admin, &agents, Duration::from_secs(15), Duration::from_secs(300));
    let before: Vec<Option<f64>> = AGENTS.iter().map(|(a, _)| cpu::container_cpu_s(hub, a)).collect();
    std::thread::sleep(IDLE_SAMPLE);
    let mut idle = serde_json::Map::new();
    for ((agent, _), before) in AGENTS.iter().zip(before) {
        let share = before
            .zip(cpu::container_cpu_s(hub, agent))
            .map(|(b, a)| (a - b) / IDLE_SAMPLE.as_secs_f64());
        idle.insert(agent.to_string(), json!(share));
    }
    json!({"settled_s": settled_s, "idle_cpu_share": idle})
}

/// The hub's agents restarted together, `rounds` times under their
/// generated gVisor runtimes and as often under runc, alternating (the
/// services, casper's code sandbox among them, stay up as generated): per
/// start, every agent's first answer, its CPU seconds by then, and how busy
/// the machine was. Where the cold start's wall time goes, side by side.
fn restart_rounds(hub: &Hub, admin: &Member, approver: &mut Approver, rounds: usize) -> Vec<Value> {
    let agents: Vec<Sandbox> = hub
        .sandboxes()
        .into_iter()
        .filter(|s| AGENTS.iter().any(|(a, _)| *a == s.name))
        .collect();
    // (label, runtime, each agent pinned to one CPU): with `BENCH_PIN=1`
    // also the generated runtimes with every agent's sandbox on one CPU
    // of its own where there are enough (`--cpuset-cpus`, round robin).
    // A sentry that sees one CPU never turns on systrap's spinning fast
    // paths.
    let mut kinds: Vec<(&str, Option<&str>, bool)> = vec![("gvisor", None, false), ("runc", Some("runc"), false)];
    if std::env::var("BENCH_PIN").is_ok_and(|v| v == "1") {
        kinds.push(("gvisor pinned", None, true));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results = Vec::new();
    for round in 0..rounds {
        let mut order = kinds.clone();
        order.rotate_left(round % kinds.len());
        for (label, runtime, pinned) in order {
            std::thread::scope(|scope| {
                for sandbox in &agents {
                    scope.spawn(move || {
                        let _ = hub.daemon.docker(&["stop", "-t", "30", &sandbox.name]);
                        let _ = hub.daemon.docker(&["rm", "-f", &sandbox.name]);
                    });
                }
            });
            let load = load_average();
            let busy = cpu::Busy::now();
            let started = Instant::now();
            let started_ms = now_ms();
            std::thread::scope(|scope| {
                for (index, sandbox) in agents.iter().enumerate() {
                    scope.spawn(move || {
                        let mut args = run_args_with_runtime(hub, sandbox, runtime.unwrap_or(&sandbox.runtime));
                        if pinned {
                            args.insert(3, format!("--cpuset-cpus={}", index % cpus));
                        }
                        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                        docker_ok(hub, &refs);
                    });
                }
            });
            let together = ready_together(hub, admin, started_ms, approver);
            let result = json!({
                "runtime": label,
                "round": round,
                "all_answering_s": started.elapsed().as_secs_f64(),
                "agent_answered_s": together.answered,
                "agent_cpu_s_at_answer": together.cpu_s,
                "sandbox_cpu_s": cpu::every_container_cpu_s(hub),
                "machine": busy.since(),
                "load_before": load,
                "load_after": load_average(),
                "settled": settle_together(hub, admin),
            });
            eprintln!("bench: restart {result}");
            results.push(result);
        }
    }
    // Leave the agents as the hub runs them.
    for sandbox in &agents {
        let _ = hub.daemon.docker(&["rm", "-f", &sandbox.name]);
        hub.start_sandbox(sandbox);
    }
    results
}

/// `scripts/bench-rehearsal.sh`; `BENCH_ROUNDS` (default 4) starts per
/// runtime and agent, `BENCH_REPLIES` (default 5) round trips after each
/// start, `BENCH_AGENTS` (default all three), `BENCH_VARIANTS` extra runsc
/// flags, `BENCH_JSON` where the results go. `BENCH_RESTARTS=N` restarts
/// the hub's agents together N times per runtime after the cold start
/// (`restart_rounds`). `BENCH_LOAD=1` runs the load rounds
/// (benches/rehearsal/load.rs) after those and before the per-agent
/// alternation; `BENCH_LOAD=only` instead of it. `BENCH_ROUNDS=0`: no
/// per-agent alternation.
fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (the
    // suite) runs benches without it only to check they start: measure
    // nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("run with `cargo bench --bench rehearsal` to measure");
        return;
    }
    // Dropped in reverse: the warden first, then the hub, then the spec.
    let spec_dir = tempfile::Builder::new()
        .prefix("appliance-bench-spec-")
        .tempdir()
        .unwrap();
    let Some((hub, admin, cold, mut approver)) = cold_start(spec_dir.path()) else {
        return;
    };
    let rounds = env_number("BENCH_ROUNDS", 4);
    let replies = env_number("BENCH_REPLIES", 5);
    let only = std::env::var("BENCH_AGENTS").unwrap_or_else(|_| "casper,melchior,balthasar".into());
    let chosen: Vec<&(&str, &str)> = AGENTS
        .iter()
        .filter(|(a, _)| only.split(',').any(|o| o == *a))
        .collect();
    let load_mode = std::env::var("BENCH_LOAD").unwrap_or_default();
    let mut results = Results {
        cold,
        restarts: Vec::new(),
        load: Value::Null,
        agents: Vec::new(),
        rounds,
        replies,
    };
    let restarts = env_number("BENCH_RESTARTS", 0);
    if restarts > 0 {
        results.restarts = restart_rounds(&hub, &admin, &mut approver, restarts);
        results.write();
    }
    if !load_mode.is_empty() && load_mode != "0" {
        let names: Vec<&str> = chosen.iter().map(|(a, _)| *a).collect();
        results.load = load::run(&hub, &admin, &names);
        results.write();
        if load_mode == "only" {
            return;
        }
    }
    for (agent, kind) in chosen.into_iter().filter(|_| rounds > 0) {
        let sandbox = hub.sandboxes().into_iter().find(|s| s.name == *agent).unwrap();
        let mut result = bench_agent(&hub, &admin, &sandbox, rounds, replies, &mut approver, kind);
        result["kind"] = json!(kind);
        results.agents.push(result);
        results.write();
    }
}

struct Results {
    cold: Value,
    restarts: Vec<Value>,
    load: Value,
    agents: Vec<Value>,
    rounds: usize,
    replies: usize,
}

/// The results so far, as JSON at `BENCH_JSON` (rewritten after each
/// agent, so a later failure keeps what was measured).
impl Results {
    fn write(&self) {
        let kernel = fs::read_to_string("/proc/version").unwrap_or_default();
        let out = json!({
            "cold_start": self.cold,
            "restarts": self.restarts,
            "load": self.load,
            "agents": self.agents,
            "machine": {
                "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
                "kernel": kernel.trim(),
                "runsc": String::from_utf8_lossy(&std::process::Command::new("runsc").arg("--version").output().map(|o| o.stdout).unwrap_or_default()).lines().next().unwrap_or_default(),
            },
            "rounds": self.rounds,
            "replies_per_round": self.replies,
        });
        let path = std::env::var("BENCH_JSON")
            .unwrap_or_else(|_| root().join("target/bench-rehearsal.json").display().to_string());
        fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
        eprintln!("bench: results in {path}");
    }
}
