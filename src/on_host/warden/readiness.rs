//! A sandbox that stays down: Docker's events say when a container dies
//! or starts, but not that it never came back (a unit systemd gave up on,
//! a container removed, an image that no longer starts). After each poll
//! the warden reads every sandbox's state (`docker ps`, and on the
//! appliance the units' states from systemd); one that is not running for
//! longer than `--unready-after` is one ops-room notice, until it runs
//! again. Sandboxes `!halt --stop` stopped are down on purpose and skipped.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Warden;
use super::control::SandboxControl;
use super::docker::now_ns;

/// One unit's state, as `systemctl show` gives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    pub active: String,
    pub sub: String,
    pub restarts: u64,
}

impl Warden<'_> {
    pub(super) fn watch_readiness(&mut self) -> Result<()> {
        let states = match self.docker.states(&self.sandboxes) {
            Ok(states) => states,
            // Reported once by the events' poll; nothing to judge by here.
            Err(_) => return Ok(()),
        };
        let units = self.unit_states();
        let now = now_ns() / 1_000_000_000;
        for name in self.sandboxes.clone() {
            let docker = states.get(&name);
            let ready = docker.is_some_and(|s| s == "running");
            if ready || self.state.stopped.contains(&name) {
                if self.state.unready.remove(&name).is_some_and(|u| u.reported) {
                    self.audit("sandbox.ready", "warden", &name, "running again")?;
                }
                continue;
            }
            let down = self.state.unready.entry(name.clone()).or_insert(super::state::Unready {
                since: now,
                reported: false,
            });
            let seconds = now.saturating_sub(down.since);
            if down.reported || seconds < self.unready_after.as_secs() {
                continue;
            }
            down.reported = true;
            let text = unready_text(&name, seconds, docker.map(String::as_str), units.get(&name));
            self.audit("sandbox.unready", "warden", &name, &text)?;
            self.ops_notice(&text)?;
        }
        self.state.save(&self.state_path)
    }

    /// The sandboxes' units, when systemd runs them; empty when it does
    /// not answer (the notice then has Docker's word only).
    fn unit_states(&mut self) -> BTreeMap<String, Unit> {
        if self.control != SandboxControl::Systemd {
            return BTreeMap::new();
        }
        match systemctl_show(&self.sandboxes) {
            Ok(units) => units,
            Err(error) => {
                (self.log)(format!("unit states unknown: {error:#}"));
                BTreeMap::new()
            }
        }
    }
}

/// `sandbox melchior: not ready for 130 s (no container; unit failed/failed, 5 restart(s))`.
pub fn unready_text(name: &str, seconds: u64, docker: Option<&str>, unit: Option<&Unit>) -> String {
    let container = docker.map_or("no container".to_string(), |s| format!("container {s}"));
    let unit = unit.map_or(String::new(), |u| {
        format!(
            "; unit docker-{name}.service {}/{}, {} restart(s)",
            u.active, u.sub, u.restarts
        )
    });
    format!("sandbox {name}: not ready for {seconds} s ({container}{unit})")
}

/// `systemctl show` of each sandbox's unit: sandbox -> state.
fn systemctl_show(sandboxes: &[String]) -> Result<BTreeMap<String, Unit>> {
    let mut command = Command::new("systemctl");
    command.args(["show", "--property=Id,ActiveState,SubState,NRestarts"]);
    command.args(sandboxes.iter().map(|s| format!("docker-{s}.service")));
    let output = command.output().context("cannot run `systemctl`")?;
    if !output.status.success() {
        bail!(
            "`systemctl show` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(parse_show(&String::from_utf8_lossy(&output.stdout)))
}

/// `systemctl show` prints one block of `Key=value` lines per unit,
/// separated by blank lines.
pub fn parse_show(text: &str) -> BTreeMap<String, Unit> {
    let mut units = BTreeMap::new();
    for block in text.split("\n\n") {
        let mut id = None;
        let mut unit = Unit::default();
        for (key, value) in block.lines().filter_map(|l| l.split_once('=')) {
            match key {
                "Id" => id = Some(value.to_string()),
                "ActiveState" => unit.active = value.to_string(),
                "SubState" => unit.sub = value.to_string(),
                "NRestarts" => unit.restarts = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        let sandbox = id
            .as_deref()
            .and_then(|i| i.strip_prefix("docker-")?.strip_suffix(".service"));
        if let Some(sandbox) = sandbox {
            units.insert(sandbox.to_string(), unit);
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemctl_show_blocks_become_units_by_sandbox() {
        let text = "Id=docker-casper.service\nActiveState=failed\nSubState=failed\nNRestarts=5\n\n\
                    NRestarts=0\nId=docker-melchior.service\nActiveState=active\nSubState=running\n";
        let units = parse_show(text);
        assert_eq!(
            units["casper"],
            Unit {
                active: "failed".into(),
                sub: "failed".into(),
                restarts: 5
            }
        );
        assert_eq!(units["melchior"].active, "active");
        assert_eq!(units.len(), 2);
    }

    #[test]
    fn the_notice_names_what_docker_and_systemd_say() {
        let unit = Unit {
            active: "activating".into(),
            sub: "auto-restart".into(),
            restarts: 7,
        };
        assert_eq!(
            unready_text("melchior", 130, None, Some(&unit)),
            "sandbox melchior: not ready for 130 s (no container; unit docker-melchior.service activating/auto-restart, 7 restart(s))"
        );
        assert_eq!(
            unready_text("casper", 121, Some("exited"), None),
            "sandbox casper: not ready for 121 s (container exited)"
        );
    }
}
