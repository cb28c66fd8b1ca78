//! Issue 25, item 4: where the CPU goes where a target is missed. With
//! `BENCH_PROFILE=DIR`, every start of the per-agent rounds is profiled
//! from inside the agent's sandbox, the same way under every runtime, into
//! `DIR/<agent>-<runtime>-r<round>/` (scripts/profile-report.py reads it):
//!
//! - OpenClaw (Node): `--cpu-prof`, one profile per process and per
//!   worker thread (OpenClaw runs its SQLite work in workers and child
//!   processes), each written when it ends (the bench stops the container
//!   after its round trips); `meta.json` says when `docker run` ran
//!   (`started_ms`) and when, from then, the agent was ready and the round
//!   trips ran.
//! - Hermes (Python): the bench's own sampling profiler
//!   (benches/rehearsal/pyprof/sitecustomize.py, mounted read-only and
//!   loaded through `PYTHONPATH`): every 10 ms, each thread's CPU time
//!   since the last look, put on the stack it is in; written on SIGUSR2 as
//!   `start.txt` (to its first answer), `settle.txt` and `trips.txt` (the
//!   round trips). py-spy, which reads the process from outside, could not:
//!   in a gVisor sandbox it found no Python version in the process ("Failed
//!   to find python version from target process"), and under runc `docker
//!   exec --privileged` could not give it `CAP_SYS_PTRACE` in a container
//!   started with every capability dropped and `no-new-privileges`
//!   ("unable to apply caps").
//! - Under a runsc variant that carries `--profile`: the sentry's CPU
//!   profile (`runsc debug --profile-cpu`) over the first
//!   `SENTRY_START` after `docker run` and over the round trips' first
//!   `SENTRY_TRIPS` (`sentry-start.pprof`, `sentry-trips.pprof`).
//!
//! Profiling changes what it measures (a sampler in the sandbox, a volume
//! to write to), the same way for every runtime: its runs are for where
//! the time goes, not for the ratios of docs/benchmarks.md.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::hub::Hub;
use crate::now_ms;

/// How long the sentry is profiled from `docker run`, and over the round
/// trips.
const SENTRY_START: Duration = Duration::from_secs(40);
const SENTRY_TRIPS: Duration = Duration::from_secs(20);
/// Where the profile directory and the Python profiler appear inside the
/// sandbox.
const OUT: &str = "/bench-profile";
const PYPROF: &str = "/bench-pyprof";

/// `BENCH_PROFILE`'s directory, when profiling, and which kinds of agent
/// get a profiler inside their sandbox (`BENCH_PROFILE_IN`, default
/// `Hermes,OpenClaw`; the sentry's profile needs none).
pub struct Profiler {
    dir: PathBuf,
    inside: Vec<String>,
}

impl Profiler {
    pub fn from_env() -> Option<Profiler> {
        let dir = PathBuf::from(std::env::var_os("BENCH_PROFILE")?);
        fs::create_dir_all(&dir).unwrap();
        let inside = std::env::var("BENCH_PROFILE_IN").unwrap_or_else(|_| "Hermes,OpenClaw".into());
        Some(Profiler {
            dir,
            inside: inside.split(',').map(|k| k.trim().to_string()).collect(),
        })
    }

    /// One start's profiles, in a directory of their own that the sandbox's
    /// user can write to.
    pub fn session(&self, agent: &str, kind: &str, runtime: &str, round: usize, sentry: bool) -> Session {
        let out = self.dir.join(format!("{agent}-{runtime}-r{round}"));
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
        let mut args = vec![format!("--volume={}:{OUT}", out.display())];
        let inside = self.inside.iter().any(|k| k == kind);
        match kind {
            // V8 samples a thread by signalling it, which gVisor's sentry
            // delivers: with Node's default of a sample per millisecond
            // OpenClaw's start under gVisor took ~270 s instead of ~85, with
            // one per 10 ms 139 s (under runc 27 s, no slower).
            // `BENCH_PROFILE_IN=Hermes` leaves OpenClaw unprofiled inside.
            "OpenClaw" if inside => args.push(format!(
                "--env=NODE_OPTIONS=--cpu-prof --cpu-prof-interval=10000 --cpu-prof-dir={OUT}"
            )),
            "Hermes" if inside => {
                let pyprof = crate::support::root().join("benches/rehearsal/pyprof");
                args.push(format!("--volume={}:{PYPROF}:ro", pyprof.display()));
                args.push(format!("--env=PYTHONPATH={PYPROF}"));
                args.push(format!("--env=BENCH_PYPROF={OUT}"));
            }
            _ => {}
        }
        Session {
            agent: agent.to_string(),
            kind: kind.to_string(),
            inside,
            out,
            args,
            sentry,
            started_ms: 0,
            meta: serde_json::Map::new(),
            sentry_start: None,
            sentry_trips: None,
        }
    }
}

/// The profiles of one start of one agent.
pub struct Session {
    agent: String,
    kind: String,
    /// Whether a profiler runs inside the sandbox (`BENCH_PROFILE_IN`).
    inside: bool,
    out: PathBuf,
    /// `docker run` options the profilers need.
    pub args: Vec<String>,
    /// Whether the runtime was started with `--profile`.
    sentry: bool,
    started_ms: i64,
    meta: serde_json::Map<String, Value>,
    sentry_start: Option<SentryProfile>,
    sentry_trips: Option<SentryProfile>,
}

/// A `runsc debug --profile-cpu` running in a thread, and when it began
/// (seconds from `docker run`).
struct SentryProfile {
    name: &'static str,
    from_s: f64,
    duration: Duration,
    thread: JoinHandle<String>,
}

impl Session {
    /// Just after `docker run` returned.
    pub fn started(&mut self, hub: &Hub, started_ms: i64) {
        self.started_ms = started_ms;
        self.meta.insert("started_ms".into(), json!(started_ms));
        if self.sentry {
            self.sentry_start = Some(self.sentry_profile(hub, "sentry-start", SENTRY_START));
        }
    }

    /// The agent's first answer.
    pub fn ready(&mut self, hub: &Hub) {
        self.mark("ready_s");
        self.python_window(hub, "start");
    }

    /// Just before the round trips (and the bench's CPU reads before
    /// them).
    pub fn trips_begin(&mut self, hub: &Hub) {
        // The sentry takes one CPU profile at a time: an agent ready
        // within `SENTRY_START` waits here for the start's to end.
        self.join_sentry_profiles();
        self.mark("trips_from_s");
        self.python_window(hub, "settle");
        if self.sentry {
            self.sentry_trips = Some(self.sentry_profile(hub, "sentry-trips", SENTRY_TRIPS));
        }
    }

    pub fn trips_end(&mut self, hub: &Hub, trips: usize) {
        self.mark("trips_to_s");
        self.meta.insert("trips".into(), json!(trips));
        self.python_window(hub, "trips");
    }

    /// Waits for the sentry's profiles, then stops the agent (Node writes
    /// its profile as it exits), and writes `meta.json`.
    pub fn finish(mut self, hub: &Hub) {
        self.join_sentry_profiles();
        let _ = hub.daemon.docker(&["stop", "-t", "30", &self.agent]);
        self.write_meta();
    }

    /// A start that failed: `meta.json` says why, so the report does not
    /// pass over it in silence.
    pub fn failed(mut self, why: &str) {
        self.join_sentry_profiles();
        self.meta.insert("error".into(), json!(why));
        self.write_meta();
    }

    /// Each finished sentry profile's span and `runsc debug`'s output.
    fn join_sentry_profiles(&mut self) {
        for profile in [self.sentry_start.take(), self.sentry_trips.take()]
            .into_iter()
            .flatten()
        {
            let output = profile.thread.join().unwrap();
            self.meta.insert(
                profile.name.into(),
                json!({"from_s": profile.from_s, "seconds": profile.duration.as_secs(), "runsc": output}),
            );
        }
    }

    fn write_meta(mut self) {
        self.meta.insert("agent".into(), json!(self.agent));
        self.meta.insert("kind".into(), json!(self.kind));
        let files: Vec<String> = fs::read_dir(&self.out)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        eprintln!("bench: profiles of {} in {}: {files:?}", self.agent, self.out.display());
        fs::write(
            self.out.join("meta.json"),
            serde_json::to_string_pretty(&Value::Object(self.meta)).unwrap(),
        )
        .unwrap();
    }

    /// Seconds since `docker run` under `key`.
    fn mark(&mut self, key: &str) {
        self.meta
            .insert(key.into(), json!((now_ms() - self.started_ms) as f64 / 1000.0));
    }

    /// Has the Python profiler write what it counted since its last window
    /// as `<name>.txt`: it reads the name from `window` on SIGUSR2, which
    /// tini, the sandbox's first process, passes to the gateway (SIGUSR1
    /// would restart it: Hermes' own signal for that). Waits up to 10 s
    /// for the file.
    fn python_window(&self, hub: &Hub, name: &str) {
        if !(self.inside && self.kind == "Hermes") {
            return;
        }
        fs::write(self.out.join("window"), name).unwrap();
        let _ = hub.daemon.docker(&["kill", "--signal=USR2", &self.agent]);
        let written = self.out.join(format!("{name}.txt"));
        let started = Instant::now();
        while !written.exists() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !written.exists() {
            eprintln!("bench: the Python profiler in {} wrote no {name}.txt", self.agent);
        }
    }

    /// `runsc debug --profile-cpu` of the agent's sandbox for `duration`,
    /// in a thread, by the same runsc binary and state root as the
    /// sandbox's own; the thread returns runsc's output, or why it could
    /// not run.
    fn sentry_profile(&self, hub: &Hub, name: &'static str, duration: Duration) -> SentryProfile {
        let id = crate::docker_ok(hub, &["inspect", "-f", "{{.Id}}", &self.agent]);
        let file = self.out.join(format!("{name}.pprof"));
        let from_s = (now_ms() - self.started_ms) as f64 / 1000.0;
        let thread = std::thread::spawn(move || {
            let Some((runsc, root)) = runsc_of(&id) else {
                return format!("no runsc process names container {id}");
            };
            let output = std::process::Command::new(runsc)
                .arg(format!("--root={root}"))
                .arg("debug")
                .arg(format!("--profile-cpu={}", file.display()))
                .arg(format!("--duration={}s", duration.as_secs()))
                .arg(&id)
                .output();
            match output {
                Ok(o) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout).trim(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => format!("runsc: {e}"),
            }
        });
        SentryProfile {
            name,
            from_s,
            duration,
            thread,
        }
    }
}

/// The runsc binary of container `id` and the `--root` that dockerd's shim
/// gave it, read off a runsc process of that container (the sentry's
/// `runsc ... boot`, the gofer's): `runsc debug` must use the same.
fn runsc_of(id: &str) -> Option<(PathBuf, String)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if !args.iter().any(|a| a.contains(id)) || !args.first().is_some_and(|a| a.contains("runsc")) {
                continue;
            }
            let binary = fs::read_link(entry.path().join("exe")).ok();
            if let (Some(binary), Some(root)) = (binary, flag_value(&args, "--root")) {
                return Some((binary, root));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// `--name=value` or `--name value` in `args`.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("{name}="))
            .map(String::from)
            .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
    })
}

/// Whether a runtime's flags turn on runsc's profiling.
pub fn profiles_sentry(flags: &[String]) -> bool {
    flags.iter().any(|f| f == "--profile" || f == "--profile=true")
}
