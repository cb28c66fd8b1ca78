//! The warden's side of the tool-call audit: after each `/sync`, every
//! agent's own record of its tool calls (the plan's `tool_log`, read by
//! `toollog`) adds one `tool.call` record per new call to the trail: the
//! tool, what it acted on, never a secret the agent was given. An agent
//! whose record cannot be read (its volume on another host, a torn copy)
//! is skipped and audited once per run of failures.

use std::path::PathBuf;

use anyhow::Result;

use super::Warden;
use super::toollog::{read_new, redact, secrets_in};
use crate::schema::plan::{AccountKind, Plan, ToolLog};

/// An agent whose tool calls the warden audits.
#[derive(Debug, Clone)]
pub(super) struct Watched {
    pub user_id: String,
    pub localpart: String,
    pub log: ToolLog,
    /// Its secrets directory: their values are redacted from records.
    pub secrets: PathBuf,
}

pub(super) fn watched(plan: &Plan, state_dir: &std::path::Path) -> Vec<Watched> {
    plan.accounts
        .iter()
        .filter(|a| a.kind == AccountKind::Agent)
        .filter_map(|a| {
            Some(Watched {
                user_id: a.user_id.clone(),
                localpart: a.localpart.clone(),
                log: a.tool_log.clone()?,
                secrets: state_dir.join(&a.secrets_dir),
            })
        })
        .collect()
}

impl Warden<'_> {
    pub(super) fn watch_tool_calls(&mut self) -> Result<()> {
        for agent in self.tool_logs.clone() {
            let calls = self.docker.volume_mountpoint(&agent.log.volume).and_then(|root| {
                let cursor = self.state.tool_cursors.entry(agent.localpart.clone()).or_default();
                read_new(agent.log.format, &root.join(&agent.log.path), cursor)
            });
            let calls = match calls {
                Ok(calls) => {
                    self.tool_logs_failing.remove(&agent.localpart);
                    calls
                }
                Err(error) => {
                    if self.tool_logs_failing.insert(agent.localpart.clone()) {
                        let detail = format!("cannot read {} `{}`: {error:#}", agent.log.volume, agent.log.path);
                        self.audit("tool_log.unavailable", "warden", &agent.user_id, &detail)?;
                    }
                    continue;
                }
            };
            let secrets = if calls.is_empty() {
                Vec::new()
            } else {
                secrets_in(&agent.secrets)
            };
            for call in calls {
                let detail = redact(&call.target, &secrets);
                self.audit("tool.call", &agent.user_id, &redact(&call.name, &secrets), &detail)?;
            }
        }
        self.state.save(&self.state_path)
    }
}
