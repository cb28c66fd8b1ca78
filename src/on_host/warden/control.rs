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

/// Who starts and stops the sandboxes (`--sandbox-control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

#[derive(Debug, Clone, Copy)]
enum Action {
    Stop,
    Start,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Action::Stop => "stopped",
            Action::Start => "started",
        }
    }

    fn why(self) -> &'static str {
        match self {
            Action::Stop => "stopped by `!halt --stop`",
            Action::Start => "started again by `!resume`",
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
            if self.sandboxes.contains(&name) {
                said.push(self.act(admin, Action::Stop, &name)?);
            } else {
                said.push(format!("{name}: no sandbox on this host, muted only"));
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
            if self.state.stopped.contains(&name) {
                said.push(self.act(admin, Action::Start, &name)?);
            }
        }
        Ok(said.join("; "))
    }

    /// Stops or starts one sandbox, remembers it, audits it; what happened.
    fn act(&mut self, admin: &str, action: Action, name: &str) -> Result<String> {
        let verb = action.verb();
        match self.sandbox_action(verb, name) {
            Ok(()) => {
                match action {
                    Action::Stop => self.state.stopped.insert(name.to_string()),
                    Action::Start => self.state.stopped.remove(name),
                };
                let detail = format!("{} ({})", action.why(), self.control.name());
                self.audit(&format!("sandbox.{}", action.done()), admin, name, &detail)?;
                Ok(format!("{name}: sandbox {}", action.done()))
            }
            Err(error) => {
                let detail = format!("could not {verb}: {error:#}");
                self.audit(&format!("sandbox.{verb}_failed"), admin, name, &detail)?;
                Ok(format!("{name}: {detail}"))
            }
        }
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
