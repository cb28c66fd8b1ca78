//! `appliance upgrade`, on the Matrix host (docs/upgrade.md): a state
//! snapshot tagged with the running system generation, the switch to the
//! new system, a health gate (`gate.rs`); when the switch or the gate
//! fails, the system switched back to that generation *and* the snapshot
//! restored, said in the terminal, the ops room and the audit trail.
//!
//! A journal (`upgrade.json` beside the backup status) is written once the
//! snapshot exists and says where the upgrade is: an upgrade killed at any
//! moment is finished by the next `appliance upgrade` (the same snapshot,
//! the same generation to go back to), never started afresh over it.
//!
//! Reads the bootstrap plan and `backup.json`, never the spec.

pub mod gate;
mod journal;
mod report;
pub mod snapshot;
pub mod system;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use self::journal::{Journal, Stage};
use self::system::System;
use crate::on_host::backup::BackupConfig;
use crate::on_host::bootstrap::client::Client;
use crate::on_host::bootstrap::{TOKEN_FILE, secrets};
use crate::on_host::warden::docker::Docker;
use crate::on_host::warden::state::State;
use crate::schema::plan::Plan;

pub struct Upgrade<'a> {
    pub plan: &'a Plan,
    pub backup: &'a BackupConfig,
    pub state_dir: PathBuf,
    pub homeserver: String,
    pub restic: String,
    /// The docker CLI: the gate reads the sandboxes with it, and a restore
    /// registers the volumes with it.
    pub docker: String,
    /// Whether a restore registers the volumes with Docker first.
    pub register_volumes: bool,
    pub audit: PathBuf,
    /// The admin (user id) who says the probe mentions.
    pub probe_as: String,
    /// The health gate's bound.
    pub timeout: Duration,
}

/// How an upgrade ended.
#[derive(Debug)]
pub enum Outcome {
    /// The new system passed the gate and stays.
    Upgraded { from: u64, to: u64, snapshot: String },
    /// It failed; the system and the state are back as they were.
    RolledBack {
        generation: u64,
        snapshot: String,
        failed: Vec<String>,
        /// The gate after the rollback: what still fails (empty: healthy).
        after: Vec<String>,
    },
}

impl Upgrade<'_> {
    fn warden_state(&self) -> PathBuf {
        self.state_dir
            .join(crate::on_host::warden::WARDEN_DIR)
            .join(crate::on_host::warden::STATE_FILE)
    }

    fn token(&self) -> Result<String> {
        let path = self
            .state_dir
            .join(&self.plan.bootstrap_account.secrets_dir)
            .join(TOKEN_FILE);
        secrets::read(&path)?.with_context(|| {
            format!(
                "the appliance account's token `{}` is missing\nhint: `appliance bootstrap` registers it",
                path.display()
            )
        })
    }

    fn client(&self, within: Duration) -> Client {
        Client::new(&self.homeserver, Instant::now() + within, Duration::from_secs(30))
    }

    fn journal_path(&self) -> PathBuf {
        journal::path(self.backup)
    }

    /// The gate, bounded by `timeout` from now.
    fn gate(&self) -> Result<gate::Verdict> {
        let token = self.token()?;
        let client = self.client(self.timeout + Duration::from_secs(60));
        let docker = Docker {
            program: self.docker.clone(),
        };
        let warden_state = self.warden_state();
        let gate = gate::Gate {
            plan: self.plan,
            client: &client,
            token: &token,
            docker: &docker,
            warden_state: &warden_state,
            probe_as: &self.probe_as,
            deadline: Instant::now() + self.timeout,
        };
        Ok(gate.run())
    }

    /// An agent muted before the upgrade would fail the gate whatever the
    /// new system does: refused, nothing changed.
    fn refuse_when_muted(&self) -> Result<()> {
        let state = State::load(&self.warden_state())?;
        let muted: Vec<&str> = state.held_mutes().map(|(_, agent, _)| agent).collect();
        if !muted.is_empty() {
            bail!(
                "these agents are muted, so no health gate can pass: {}\nhint: `!resume` them in the ops room first",
                muted.join(", ")
            );
        }
        Ok(())
    }
}

/// The whole upgrade, or the end of one a kill interrupted.
pub fn run(up: &Upgrade, system: &dyn System, say: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let mut journal = match Journal::load(&up.journal_path())? {
        Some(journal) => {
            say(&format!(
                "an upgrade was interrupted ({}); finishing it with snapshot `{}` of generation {}",
                journal.stage.describe(),
                journal.snapshot,
                journal.generation
            ));
            journal
        }
        None => begin(up, system, say)?,
    };
    if journal.stage == Stage::Switching {
        let failed = switch_and_gate(up, system, say);
        if failed.is_empty() {
            let to = system.generation()?;
            journal::remove(&up.journal_path())?;
            let outcome = Outcome::Upgraded {
                from: journal.generation,
                to,
                snapshot: journal.snapshot.clone(),
            };
            report::outcome(up, &outcome, say);
            return Ok(outcome);
        }
        journal.stage = Stage::RollingBack { failed };
        journal.save(&up.journal_path())?;
    }
    let Stage::RollingBack { failed } = journal.stage.clone() else {
        unreachable!("the stage was switching or rolling back");
    };
    if let Err(error) = roll_back(up, system, &journal, say) {
        report::rollback_failed(up, &journal, &failed, &error, say);
        return Err(error.context("the rollback failed; run `appliance upgrade` again to finish it"));
    }
    journal::remove(&up.journal_path())?;
    say("the health gate again, after the rollback:");
    let after = match up.gate() {
        Ok(verdict) => verdict.failed,
        Err(error) => vec![format!("{error:#}")],
    };
    let outcome = Outcome::RolledBack {
        generation: journal.generation,
        snapshot: journal.snapshot,
        failed,
        after,
    };
    report::outcome(up, &outcome, say);
    Ok(outcome)
}

/// The snapshot of the running generation, then the journal saying so.
fn begin(up: &Upgrade, system: &dyn System, say: &mut dyn FnMut(&str)) -> Result<Journal> {
    up.refuse_when_muted()?;
    let generation = system.generation()?;
    say(&format!(
        "system generation {generation} runs; taking a snapshot of the state"
    ));
    let snapshot = snapshot::take(up.backup, &up.restic, generation, say)?;
    say(&format!(
        "snapshot `{snapshot}` (tags `{}`, `generation-{generation}`)",
        snapshot::TAG
    ));
    let journal = Journal {
        snapshot,
        generation,
        stage: Stage::Switching,
    };
    journal.save(&up.journal_path())?;
    report::started(up, &journal, say);
    Ok(journal)
}

/// The switch and the gate; what failed (empty: all passed).
fn switch_and_gate(up: &Upgrade, system: &dyn System, say: &mut dyn FnMut(&str)) -> Vec<String> {
    say("switching to the new system");
    if let Err(error) = system.switch() {
        return vec![format!("the switch: {error:#}")];
    }
    say(&format!(
        "health gate: every sandbox up, no agent muted, every agent answers a mention within {} s",
        up.timeout.as_secs()
    ));
    match up.gate() {
        Ok(verdict) => {
            for line in &verdict.passed {
                say(&format!("  ok: {line}"));
            }
            for line in &verdict.failed {
                say(&format!("  FAILED: {line}"));
            }
            verdict.failed
        }
        Err(error) => vec![format!("the health gate: {error:#}")],
    }
}

/// The system back to the journal's generation, then the state back to
/// its snapshot with the units that use it stopped.
fn roll_back(up: &Upgrade, system: &dyn System, journal: &Journal, say: &mut dyn FnMut(&str)) -> Result<()> {
    say(&format!(
        "rolling back: the system to generation {}",
        journal.generation
    ));
    system.switch_to(journal.generation)?;
    let units = &up.backup.units;
    say(&format!("stopping what uses the state: {}", units.join(" ")));
    system.stop(units)?;
    say(&format!("restoring snapshot `{}`", journal.snapshot));
    let docker = up.register_volumes.then_some(up.docker.as_str());
    snapshot::restore(up.backup, &up.restic, &journal.snapshot, docker, say)?;
    say(&format!("starting them again: {}", units.join(" ")));
    system.start(units)?;
    up.client(up.timeout).wait_until_up(|_| say("waiting for Synapse"))?;
    Ok(())
}

/// `--dry-run`: what would change, and nothing changed.
pub fn preview(up: &Upgrade, system: &dyn System) -> Result<String> {
    let generation = system.generation()?;
    let preview = system.preview()?;
    let names: Vec<String> = up.plan.sandboxes.iter().map(|s| s.name.clone()).collect();
    let restarted = system::restarted_sandboxes(&preview.activation, &names);
    let mut out = format!(
        "system generation {generation} runs.\n\nclosure:\n{}\n",
        preview.closure.trim_end()
    );
    out.push_str(&format!("\nactivation:\n{}\n", preview.activation.trim_end()));
    out.push_str(&if restarted.is_empty() {
        "\nno sandbox restarts\n".to_string()
    } else {
        format!("\nsandboxes that restart: {}\n", restarted.join(", "))
    });
    out.push_str(&format!(
        "\nan upgrade would first snapshot the state into `{}` (tag `generation-{generation}`), then switch, \
         then wait up to {} s for every sandbox and agent.\n",
        up.backup.repository,
        up.timeout.as_secs()
    ));
    Ok(out)
}
