//! `!halt <agent> --stop` and the `!resume` after it: the agent's sandbox
//! stopped and started again, on top of the mute. On the appliance the
//! sandbox is a systemd unit (`docker-<name>.service`, restarted by systemd
//! whatever Docker does), so the warden asks systemd; `--sandbox-control
//! docker` asks Docker directly (a host without those units, the tests).
//! Only the agent's own container is stopped: its code sandbox runs only
//! what the agent asks of it.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Warden;

/// Who starts and stops the sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxControl {
    Systemd,
    Docker,
}

impl SandboxControl {
    pub fn name(self) -> &'static str {
        match self {
            SandboxControl::Systemd => "systemd",
            SandboxControl::Docker => "docker",
        }
    }
}

/// `@casper:magi` -> `casper`: the agent's sandbox is named as it.
pub fn localpart(user_id: &str) -> &str {
    user_id.trim_start_matches('@').split(':').next().unwrap_or_default()
}

impl Warden<'_> {
    /// Stops the sandboxes of `agents`; a line on what happened.
    pub(super) fn stop_sandboxes(&mut self, admin: &str, agents: &BTreeSet<String>) -> Result<String> {
        let mut said = Vec::new();
        for agent in agents {
            let name = localpart(agent).to_string();
            if !self.sandboxes.contains(&name) {
                said.push(format!("{name}: no sandbox on this host, muted only"));
                continue;
            }
            match self.sandbox_action("stop", &name) {
                Ok(()) => {
                    self.state.stopped.insert(name.clone());
                    let detail = format!("stopped by `!halt --stop` ({})", self.control.name());
                    self.audit("sandbox.stopped", admin, &name, &detail)?;
                    said.push(format!("{name}: sandbox stopped"));
                }
                Err(error) => {
                    let detail = format!("could not stop: {error:#}");
                    self.audit("sandbox.stop_failed", admin, &name, &detail)?;
                    said.push(format!("{name}: {detail}"));
                }
            }
        }
        Ok(said.join("; "))
    }

    /// Starts again the sandboxes of `agents` that `!halt --stop` stopped;
    /// a line on what happened (empty when none was stopped).
    pub(super) fn restart_sandboxes(&mut self, admin: &str, agents: &BTreeSet<String>) -> Result<String> {
        let mut said = Vec::new();
        for agent in agents {
            let name = localpart(agent).to_string();
            if !self.state.stopped.contains(&name) {
                continue;
            }
            match self.sandbox_action("start", &name) {
                Ok(()) => {
                    self.state.stopped.remove(&name);
                    self.audit("sandbox.started", admin, &name, "started again by `!resume`")?;
                    said.push(format!("{name}: sandbox started"));
                }
                Err(error) => {
                    let detail = format!("could not start: {error:#}");
                    self.audit("sandbox.start_failed", admin, &name, &detail)?;
                    said.push(format!("{name}: {detail}"));
                }
            }
        }
        Ok(said.join("; "))
    }

    fn sandbox_action(&self, verb: &str, name: &str) -> Result<()> {
        match self.control {
            SandboxControl::Docker => self.docker.container(verb, name),
            SandboxControl::Systemd => {
                let unit = format!("docker-{name}.service");
                let output = Command::new("systemctl")
                    .args([verb, &unit])
                    .output()
                    .context("cannot run `systemctl`")?;
                if !output.status.success() {
                    bail!(
                        "`systemctl {verb} {unit}` failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    );
                }
                Ok(())
            }
        }
    }
}
