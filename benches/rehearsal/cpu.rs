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

/// The CPU seconds of the running container `name`, by the kind of
/// process and by user and system time (`/proc/<pid>/stat`'s utime and
/// stime, each process's live and exited threads): under gVisor the
/// sentry (`runsc-sandbox`: the system calls it serves), the gofer and the
/// systrap stubs (the program's own code in user time; in system time the
/// host kernel switching to and from the sentry); under runc the
/// program's processes. Processes that already exited are not in it, so
/// the sum can be below the cgroup's.
pub fn container_cpu_split(hub: &Hub, name: &str) -> Value {
    let output = hub.daemon.docker(&["inspect", "-f", "{{.State.Pid}} {{.Id}}", name]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (pid, id) = text.trim().split_once(' ').unwrap_or_default();
    let Some(dir) = cgroup_dir(pid, "cpuacct") else {
        return Value::Null;
    };
    let mut pids: Vec<String> = walk_procs(Path::new(&dir));
    // runsc's gofer is not always in the container's cgroup: found by the
    // container's id on its command line, as `memory` finds it.
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !id.is_empty() && cmdline.contains(id) && cmdline.contains("gofer") {
            pids.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    pids.sort();
    pids.dedup();
    let mut split: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for pid in pids {
        let Some((user, system)) = user_system_s(&pid) else {
            continue;
        };
        let entry = split.entry(process_kind(&pid)).or_default();
        entry.0 += user;
        entry.1 += system;
    }
    split
        .into_iter()
        .map(|(kind, (user, system))| (kind, json!({"user_s": round(user), "system_s": round(system)})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Every pid in `cgroup.procs` at or below a cgroup directory.
fn walk_procs(dir: &Path) -> Vec<String> {
    let mut pids: Vec<String> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(walk_procs(&entry.path()));
        }
    }
    pids
}

/// A process's user and system CPU seconds (fields 14 and 15 of
/// `/proc/<pid>/stat`, after the command's closing parenthesis).
fn user_system_s(pid: &str) -> Option<(f64, f64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) and stime (15) are 11, 12.
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? / 100.0, ticks(12)? / 100.0))
}

/// What a process of a sandbox is: runsc's sentry (`runsc-sandbox`) or
/// gofer (`runsc-gofer`), a systrap stub (no command line), or the
/// program's name (runc).
pub fn process_kind(pid: &str) -> String {
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
        // USER_HZ, 100 on Linux wherever this runs.
        let busy_s = (later.busy_ticks - self.busy_ticks) as f64 / 100.0;
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
