//! CPU time, the measure that a loaded 2-vCPU machine does not blur: what a
//! container's processes used (its cgroup's `cpuacct.usage`; runsc's
//! sentry, gofer and systrap stubs are all in it, as runc's processes are),
//! and how busy the whole machine was over a stretch of wall time. Wall
//! times say how long a start took on this machine under this load; CPU
//! seconds say how much work it was, gVisor against runc.

use std::fs;
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use crate::hub::Hub;

/// The cgroup v1 directory of `controller` that process `pid` is in (the
/// cgroupfs driver, as the rehearsal's dockerd uses), if it has one.
pub fn cgroup_dir(pid: &str, controller: &str) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| format!("/sys/fs/cgroup/{controller}{path}"))
        })
}

/// Seconds of CPU the running container `name` has used since it started,
/// or `None` when it is not running or its cgroup is not readable.
pub fn container_cpu_s(hub: &Hub, name: &str) -> Option<f64> {
    let output = hub.daemon.docker(&["inspect", "-f", "{{.State.Pid}}", name]);
    let pid = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || pid == "0" {
        return None;
    }
    let dir = cgroup_dir(&pid, "cpuacct")?;
    let nanos: u64 = fs::read_to_string(Path::new(&dir).join("cpuacct.usage"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(nanos as f64 / 1e9)
}

/// A container's processes (`container_processes`) and its cgroup's
/// directory, when it has one.
pub struct Processes {
    pub in_cgroup: Vec<i32>,
    pub outside: Vec<i32>,
    pub cgroup: Option<String>,
}

/// The processes of the running container `name`: those in its
/// `controller` cgroup (and below), and those of runsc for it that may sit
/// outside the cgroup (the gofer), found by the container's id on a
/// command line whose program is runsc's own (`runsc-gofer`,
/// `runsc-sandbox`; not containerd's shim, nor a `runsc debug` the bench
/// runs).
pub fn container_processes(hub: &Hub, name: &str, controller: &str) -> Processes {
    let output = hub.daemon.docker(&["inspect", "-f", "{{.State.Pid}} {{.Id}}", name]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (pid, id) = text.trim().split_once(' ').unwrap_or_default();
    let cgroup = cgroup_dir(pid, controller);
    let mut in_cgroup: Vec<i32> = Vec::new();
    if let Some(dir) = &cgroup {
        for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
            if entry.file_name() == "cgroup.procs" {
                in_cgroup.extend(
                    fs::read_to_string(entry.path())
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.parse::<i32>().ok()),
                );
            }
        }
    }
    let mut outside: Vec<i32> = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
        let program = args.next().unwrap_or_default();
        let runsc_own = program.rsplit('/').next().unwrap_or_default().starts_with("runsc-");
        if !id.is_empty() && runsc_own && args.any(|a| a.contains(id)) && !in_cgroup.contains(&pid) {
            outside.push(pid);
        }
    }
    in_cgroup.sort_unstable();
    in_cgroup.dedup();
    Processes {
        in_cgroup,
        outside,
        cgroup,
    }
}

/// The CPU seconds of the running container `name`, by the kind of
/// process and by user and system time (`/proc/<pid>/stat`'s utime and
/// stime, each process's live and exited threads): under gVisor the
/// sentry (`runsc-sandbox`: the system calls it serves), the gofer and the
/// systrap stubs (the program's own code in user time; in system time the
/// host kernel switching to and from the sentry); under runc the
/// program's processes. `exited`: what the cgroup's `cpuacct.stat` counts
/// beyond its live processes, i.e. processes that already ended (under
/// runc a program's short-lived children; under gVisor the stubs and the
/// sentry outlive them).
pub fn container_cpu_split(hub: &Hub, name: &str) -> Value {
    let processes = container_processes(hub, name, "cpuacct");
    let Some(dir) = &processes.cgroup else {
        return Value::Null;
    };
    let mut split: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    let mut live_in_cgroup = (0.0, 0.0);
    for pid in processes.in_cgroup.iter().chain(&processes.outside) {
        let Some((user, system)) = user_system_s(*pid) else {
            continue;
        };
        let entry = split.entry(process_kind(*pid)).or_default();
        entry.0 += user;
        entry.1 += system;
        if processes.in_cgroup.contains(pid) {
            live_in_cgroup.0 += user;
            live_in_cgroup.1 += system;
        }
    }
    if let Some((user, system)) = cgroup_user_system_s(Path::new(dir)) {
        split.insert(
            "exited".into(),
            ((user - live_in_cgroup.0).max(0.0), (system - live_in_cgroup.1).max(0.0)),
        );
    }
    split
        .into_iter()
        .map(|(kind, (user, system))| (kind, json!({"user_s": round(user), "system_s": round(system)})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// A cgroup's user and system CPU seconds, its exited processes included
/// (v1 `cpuacct.stat`, in clock ticks).
fn cgroup_user_system_s(dir: &Path) -> Option<(f64, f64)> {
    let stat = fs::read_to_string(dir.join("cpuacct.stat")).ok()?;
    let ticks = |key: &str| -> Option<f64> {
        stat.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<f64>().ok())
            .map(|t| t / CLOCK_TICKS_PER_S)
    };
    Some((ticks("user ")?, ticks("system ")?))
}

/// USER_HZ, the unit of `/proc/<pid>/stat`'s times and `cpuacct.stat`: 100
/// on every Linux architecture this runs on (x86-64, arm64); the kernel's
/// own tick rate does not change it.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// A process's user and system CPU seconds (fields 14 and 15 of
/// `/proc/<pid>/stat`, after the command's closing parenthesis).
fn user_system_s(pid: i32) -> Option<(f64, f64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) and stime (15) are 11, 12.
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? / CLOCK_TICKS_PER_S, ticks(12)? / CLOCK_TICKS_PER_S))
}

/// What a process of a sandbox is: runsc's sentry (`runsc-sandbox`) or
/// gofer (`runsc-gofer`), a systrap stub (no command line), or the
/// program's name (runc).
pub fn process_kind(pid: i32) -> String {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    if first.is_empty() {
        return "systrap stubs".into();
    }
    first.rsplit('/').next().unwrap_or_default().to_string()
}

/// Every running container of the hub and its CPU seconds so far.
pub fn every_container_cpu_s(hub: &Hub) -> Value {
    let output = hub.daemon.docker(&["ps", "--format", "{{.Names}}"]);
    let names = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut all = serde_json::Map::new();
    for name in names.lines().filter(|n| !n.is_empty()) {
        if let Some(cpu) = container_cpu_s(hub, name) {
            all.insert(name.to_string(), json!(round(cpu)));
        }
    }
    Value::Object(all)
}

/// The whole machine's busy and total CPU time at one moment (`/proc/stat`,
/// in clock ticks; busy is everything but idle and iowait).
pub struct Busy {
    busy_ticks: u64,
    total_ticks: u64,
    at: Instant,
}

impl Busy {
    pub fn now() -> Busy {
        let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let total_ticks: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        Busy {
            busy_ticks: total_ticks.saturating_sub(idle),
            total_ticks,
            at: Instant::now(),
        }
    }

    /// Wall seconds since `self`, the machine's busy CPU seconds in them,
    /// and the busy share of every core's time (1.0: no core was ever idle).
    pub fn since(&self) -> Value {
        let later = Busy::now();
        let busy_s = (later.busy_ticks - self.busy_ticks) as f64 / CLOCK_TICKS_PER_S;
        let total = (later.total_ticks - self.total_ticks).max(1) as f64;
        json!({
            "wall_s": round(later.at.duration_since(self.at).as_secs_f64()),
            "busy_cpu_s": round(busy_s),
            "busy_share": round((later.busy_ticks - self.busy_ticks) as f64 / total),
        })
    }
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
