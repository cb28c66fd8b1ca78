//! The health gate after a switch: what the warden's `!status` would say is
//! clean (every sandbox of this host up, and still the same container run
//! at the end: no crash loop; no agent muted), and every agent of this host
//! answers a probe mention within the bound. The probe is said by one of
//! the plan's admins, because the agents answer only the appliance's
//! humans: the appliance account (a Synapse server admin) gets a short-lived
//! token for that admin through Synapse's admin API and logs it out after.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::on_host::bootstrap::client::{self, Client, segment};
use crate::on_host::warden::docker::{Docker, status_line};
use crate::on_host::warden::state::State;
use crate::schema::plan::{AccountKind, Plan};

/// What the gate needs to look.
pub struct Gate<'a> {
    pub plan: &'a Plan,
    pub client: &'a Client,
    /// The appliance account's token.
    pub token: &'a str,
    pub docker: &'a Docker,
    /// The warden's `state.json` (its mutes).
    pub warden_state: &'a Path,
    /// The admin who says the probe.
    pub probe_as: &'a str,
    pub deadline: Instant,
}

/// The gate's verdict: what passed, and what failed (empty: it passed).
#[derive(Debug, Default)]
pub struct Verdict {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
}

impl Gate<'_> {
    pub fn run(&self) -> Verdict {
        let mut verdict = Verdict::default();
        let names: Vec<String> = self.plan.sandboxes.iter().map(|s| s.name.clone()).collect();
        let first = match self.sandboxes_up(&names) {
            Ok(started) => started,
            Err(error) => {
                verdict.failed.push(format!("{error:#}"));
                return verdict;
            }
        };
        verdict.passed.push(format!("{} sandbox(es) up", first.len()));
        match self.mutes() {
            Ok(muted) if muted.is_empty() => verdict.passed.push("no agent muted".to_string()),
            Ok(muted) => verdict.failed.extend(muted),
            Err(error) => verdict.failed.push(format!("{error:#}")),
        }
        match self.probe_all() {
            Ok(lines) => {
                for (ok, line) in lines {
                    if ok { &mut verdict.passed } else { &mut verdict.failed }.push(line);
                }
            }
            Err(error) => verdict.failed.push(format!("the probe: {error:#}")),
        }
        // The same containers still: one that died and came back meanwhile
        // is a crash loop the probe happened to miss.
        match self.docker.sandboxes(&names) {
            Ok(now) => {
                for (name, started) in &first {
                    let same = now.get(name).is_some_and(|s| s.running && &s.started_at == started);
                    if !same {
                        verdict.failed.push(format!(
                            "{} (restarted during the health gate)",
                            status_line(name, now.get(name))
                        ));
                    }
                }
            }
            Err(error) => verdict.failed.push(format!("sandboxes: unknown ({error:#})")),
        }
        verdict
    }

    /// Waits until every sandbox runs; their start times, or what is down
    /// at the deadline.
    fn sandboxes_up(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        loop {
            let found = self.docker.sandboxes(names);
            if let Ok(found) = &found
                && names.iter().all(|n| found.get(n).is_some_and(|s| s.running))
            {
                return Ok(found.iter().map(|(n, s)| (n.clone(), s.started_at.clone())).collect());
            }
            if Instant::now() >= self.deadline {
                let found = found?;
                let down: Vec<String> = names
                    .iter()
                    .filter(|n| !found.get(*n).is_some_and(|s| s.running))
                    .map(|n| status_line(n, found.get(n)))
                    .collect();
                bail!("{}", down.join("; "));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// The warden's mutes, as `!status` lists them.
    fn mutes(&self) -> Result<Vec<String>> {
        let state = State::load(self.warden_state)?;
        Ok(state
            .held_mutes()
            .map(|(room, agent, mute)| format!("agent {agent} is muted in {room} ({})", mute.reason()))
            .collect())
    }

    /// Probes every agent whose sandbox is on this host: (answered, line).
    fn probe_all(&self) -> Result<Vec<(bool, String)>> {
        let admin = self.login_as_admin()?;
        let result = self.probe_agents(&admin);
        // The probe's token is the admin's: it does not outlive the gate.
        let _ = self.client.post("/_matrix/client/v3/logout", Some(&admin), &json!({}));
        result
    }

    fn probe_agents(&self, admin: &str) -> Result<Vec<(bool, String)>> {
        let here: Vec<&str> = self.plan.sandboxes.iter().map(|s| s.name.as_str()).collect();
        let mut lines = Vec::new();
        let agents = self
            .plan
            .accounts
            .iter()
            .filter(|a| a.kind == AccountKind::Agent && here.contains(&a.localpart.as_str()));
        for agent in agents {
            let Some(room) = self
                .plan
                .rooms
                .iter()
                .find(|r| r.members.contains(&agent.user_id) && r.members.iter().any(|m| m == self.probe_as))
            else {
                lines.push((
                    false,
                    format!("agent {}: shares no room with {}", agent.localpart, self.probe_as),
                ));
                continue;
            };
            let line = match self.probe(admin, &room.alias, &agent.user_id) {
                Ok(seconds) => (true, format!("agent {} answered in {seconds} s", agent.localpart)),
                Err(error) => (false, format!("agent {}: {error:#}", agent.localpart)),
            };
            lines.push(line);
        }
        Ok(lines)
    }

    /// A short-lived token of the admin who says the probe.
    fn login_as_admin(&self) -> Result<String> {
        let valid = self.deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(300);
        let until = crate::on_host::backup::now_millis() + valid.as_millis() as u64;
        let reply = self.client.post(
            &format!("/_synapse/admin/v1/users/{}/login", segment(self.probe_as)),
            Some(self.token),
            &json!({ "valid_until_ms": until }),
        )?;
        if !reply.ok() {
            bail!(
                "the appliance account could not speak as {} ({})",
                self.probe_as,
                reply.describe()
            );
        }
        reply.str("access_token").map(str::to_string).context("no access token")
    }

    /// Mentions `agent` in room `alias` as the admin; the seconds its first
    /// answer took.
    fn probe(&self, admin: &str, alias: &str, agent: &str) -> Result<u64> {
        let joined = self.client.post(
            &format!("/_matrix/client/v3/join/{}", segment(alias)),
            Some(admin),
            &json!({}),
        )?;
        let room = joined
            .str("room_id")
            .filter(|_| joined.ok())
            .with_context(|| format!("{} could not join {alias} ({})", self.probe_as, joined.describe()))?
            .to_string();
        let content = client::mention(
            agent,
            "health check after an upgrade (`appliance upgrade`): please answer with one word.",
        );
        let txn = format!("appliance-upgrade-{}", crate::on_host::backup::now_millis());
        let sent = self.client.put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", segment(&room)),
            Some(admin),
            &content,
        )?;
        let event = sent
            .str("event_id")
            .filter(|_| sent.ok())
            .with_context(|| format!("the probe could not be sent in {alias} ({})", sent.describe()))?
            .to_string();
        let started = Instant::now();
        loop {
            if self.answered(admin, &room, &event, agent)? {
                return Ok(started.elapsed().as_secs());
            }
            if Instant::now() >= self.deadline {
                bail!("no answer to the probe mention in {alias} within the bound");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Whether `agent` said something in `room` after `event`.
    fn answered(&self, admin: &str, room: &str, event: &str, agent: &str) -> Result<bool> {
        let reply = self.client.get(
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{}?limit=50",
                segment(room),
                segment(event)
            ),
            Some(admin),
        )?;
        if !reply.ok() {
            bail!("reading the room failed ({})", reply.describe());
        }
        Ok(reply.body["events_after"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e: &Value| e["type"] == "m.room.message" && e["sender"] == agent))
    }
}
