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
