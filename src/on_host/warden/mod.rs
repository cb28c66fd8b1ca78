//! The warden: a host service, outside every sandbox, that watches the
//! plan's rooms as the appliance's own Matrix account. It obeys `!halt`,
//! `!resume` and `!status` from the plan's admins only, mutes agents at the
//! homeserver (power levels), breaks agent-to-agent loops, and writes every
//! decision to the audit trail. It reads the bootstrap plan, never the
//! spec. Documented in docs/warden.md.

pub mod approvals;
mod backups;
pub mod broker;
pub mod command;
pub mod control;
mod denials;
pub mod docker;
pub mod grants;
mod health;
mod owed;
pub mod power;
mod reactions;
pub mod readiness;
pub mod state;
mod toollog;
mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use self::command::{Command, Target};
use self::state::{Mute, State};
use crate::on_host::audit::{self, Entry, Head};
use crate::on_host::bootstrap::client::{Client, segment};
use crate::on_host::bootstrap::{TOKEN_FILE, secrets};
use crate::schema::plan::{AccountKind, DEFAULT_LOOP_BUDGET, Plan};

/// The warden's own files, relative to the state directory (root, 0700).
pub const WARDEN_DIR: &str = "warden";
pub const STATE_FILE: &str = "state.json";
pub const AUDIT_FILE: &str = "audit.jsonl";

/// How long one `/sync` waits for news; below the client's 30 s timeout.
const LONG_POLL_MS: u64 = 25_000;

#[derive(Debug, Clone)]
pub struct Options {
    pub homeserver: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub audit: Option<PathBuf>,
    /// One `/sync` without waiting, then return.
    pub once: bool,
    /// How often the audit trail's head is posted to the ops room (when it
    /// moved): a copy kept by the homeserver, out of the warden's reach.
    pub head_every: Duration,
    /// The docker CLI that reports the sandboxes (honours `DOCKER_HOST`).
    pub docker: String,
    /// The egress proxy's log [default: the plan's `proxy_log`].
    pub proxy_log: Option<PathBuf>,
    /// Who stops and starts sandboxes for `!halt --stop`.
    pub control: control::SandboxControl,
    /// How long a sandbox may stay down before the ops room hears of it.
    pub unready_after: Duration,
    /// Where the egress grant files are [default: the plan's paths].
    pub grants_dir: Option<PathBuf>,
    /// The program and arguments that make the egress proxy read the
    /// grant files again, split on spaces.
    pub proxy_reload: String,
    /// How long a code execution request waits for an admin.
    pub approval_timeout: Duration,
    /// Where the brokers listen, and where the code sandboxes' sockets
    /// are, each `<sandbox>/docker.sock` [default: the plan's paths].
    pub approval_sockets: Option<PathBuf>,
    pub code_sockets: Option<PathBuf>,
    /// The result file of the last backup run (docs/backup.md), when the
    /// host backs up.
    pub backup_status: Option<PathBuf>,
}

/// The default of `--unready-after`: longer than the slowest agent's start
/// under gVisor (OpenClaw, about a minute), so a restart is not news.
pub const UNREADY_AFTER_SECS: u64 = 180;

/// The default of `--head-every`: hourly.
pub const HEAD_EVERY_SECS: u64 = 3600;

/// A room the warden watches: its id, alias and agents.
#[derive(Debug, Clone)]
struct Room {
    alias: String,
    agents: Vec<String>,
}

pub struct Warden<'a> {
    client: Client,
    /// The homeserver's URL, for the brokers' own clients.
    client_base: String,
    token: String,
    me: String,
    admins: BTreeSet<String>,
    agents: BTreeSet<String>,
    /// Room id -> room, for the plan's rooms and the ops room.
    rooms: BTreeMap<String, Room>,
    /// The ops room's id: admins only; the warden's notices go there.
    ops: String,
    budget: u32,
    state: State,
    state_path: PathBuf,
    audit_path: PathBuf,
    head: Option<Head>,
    log: &'a mut dyn FnMut(String),
    sent: u64,
    /// The audit record whose head was last posted to the ops room, and when.
    posted: Option<(u64, Instant)>,
    head_every: Duration,
    docker: docker::Docker,
    /// The containers watched: the agents' sandboxes, named after them.
    sandboxes: Vec<String>,
    /// Docker's last answer was an error (audited once per run of them).
    docker_failing: bool,
    /// The agents whose own record of tool calls is audited.
    tool_logs: Vec<tools::Watched>,
    /// Agents whose record could not be read last time (audited once).
    tool_logs_failing: BTreeSet<String>,
    /// The egress proxy's log, when this host runs the proxy.
    proxy_log: Option<PathBuf>,
    proxy_log_failing: bool,
    /// Bridge address -> sandbox, to name who was denied.
    addresses: BTreeMap<String, String>,
    control: control::SandboxControl,
    unready_after: Duration,
    /// Which agents' egress `!allow` can widen, and where.
    grant_policy: grants::Policy,
    /// Code execution requests, shared with the brokers' threads; none
    /// when no agent's code waits for approval.
    approvals: Option<std::sync::Arc<approvals::Shared>>,
    /// The last backup run's result file (`backups.rs`).
    backup_status: Option<PathBuf>,
}

/// Runs the warden: forever, or one batch with `once`.
pub fn run(plan: &Plan, options: &Options, log: &mut dyn FnMut(String)) -> Result<()> {
    let mut warden = Warden::start(plan, options, log)?;
    if !options.once {
        warden.start_brokers(plan, options)?;
    }
    loop {
        // Before the batch, so a command's answer stays the ops room's
        // latest notice.
        warden.post_head_if_due()?;
        warden.sync(if options.once { 0 } else { LONG_POLL_MS })?;
        warden.watch_sandboxes()?;
        warden.watch_readiness()?;
        warden.watch_tool_calls()?;
        warden.watch_denials()?;
        warden.expire_grants()?;
        warden.expire_approvals()?;
        warden.watch_backups()?;
        if options.once {
            return Ok(());
        }
    }
}

/// The (room id, agent) pairs a `!halt` or `!resume` names, and the
/// agents among them.
struct Targets {
    pairs: Vec<(String, String)>,
    agents: BTreeSet<String>,
}

impl<'a> Warden<'a> {
    fn start(plan: &Plan, options: &Options, log: &'a mut dyn FnMut(String)) -> Result<Warden<'a>> {
        let state_dir = options
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&plan.state_dir));
        let dir = state_dir.join(WARDEN_DIR);
        secrets::ensure_dir(&dir, secrets::DIR_MODE, secrets::Owner::ROOT)?;
        let token_path = state_dir.join(&plan.bootstrap_account.secrets_dir).join(TOKEN_FILE);
        let token = secrets::read(&token_path)?.with_context(|| {
            format!(
                "the appliance account's token `{}` is missing\nhint: the warden starts after `appliance bootstrap` has registered `{}`",
                token_path.display(),
                plan.bootstrap_account.user_id
            )
        })?;
        let url = options.homeserver.as_deref().unwrap_or(&plan.homeserver.url);
        if !url.starts_with("http://") {
            bail!(
                "homeserver URL `{url}` is not plain `http://`\nhint: the warden talks to the Synapse on its own host, e.g. `--homeserver http://127.0.0.1:8008`"
            );
        }
        if plan.loop_budget == Some(0) {
            bail!(
                "the plan's `loop_budget` is 0, which would mute the agents at their first message\nhint: set it to 1 or more, or remove it for the default (8)"
            );
        }
        let forever = Duration::from_secs(10 * 365 * 86_400);
        let state_path = dir.join(STATE_FILE);
        let mut warden = Warden {
            client: Client::new(url, Instant::now() + forever, forever),
            client_base: url.to_string(),
            token,
            me: plan.bootstrap_account.user_id.clone(),
            admins: users_of(plan, &AccountKind::Admin),
            agents: users_of(plan, &AccountKind::Agent),
            rooms: BTreeMap::new(),
            ops: String::new(),
            budget: plan.loop_budget.unwrap_or(DEFAULT_LOOP_BUDGET),
            state: State::load(&state_path)?,
            state_path,
            audit_path: options.audit.clone().unwrap_or_else(|| dir.join(AUDIT_FILE)),
            head: None,
            log,
            sent: 0,
            posted: None,
            head_every: options.head_every,
            docker: docker::Docker {
                program: options.docker.clone(),
            },
            // The containers whose health is reported: the Matrix host's.
            sandboxes: plan.sandboxes.iter().map(|s| s.name.clone()).collect(),
            docker_failing: false,
            tool_logs: tools::watched(plan, &state_dir),
            tool_logs_failing: BTreeSet::new(),
            proxy_log: options
                .proxy_log
                .clone()
                .or_else(|| plan.proxy_log.as_ref().map(PathBuf::from)),
            proxy_log_failing: false,
            control: options.control,
            unready_after: options.unready_after,
            grant_policy: grants::Policy::new(plan, options.grants_dir.as_deref(), &options.proxy_reload),
            backup_status: options.backup_status.clone(),
            addresses: plan
                .sandboxes
                .iter()
                .filter_map(|s| Some((s.address.clone()?, s.name.clone())))
                .collect(),
            approvals: if plan.accounts.iter().any(|a| a.code_approval.is_some()) {
                Some(std::sync::Arc::new(approvals::Shared::load(
                    dir.join(approvals::APPROVALS_FILE),
                )?))
            } else {
                None
            },
        };
        warden.resolve_rooms(plan)?;
        let detail = format!(
            "watching {} room(s) as {}; loop budget {}",
            warden.rooms.len(),
            warden.me,
            warden.budget
        );
        warden.audit("warden.start", "warden", &warden.me.clone(), &detail)?;
        // Before any command: what expired while it was away goes, and
        // the proxy's files match the state again.
        warden.restore_grants()?;
        Ok(warden)
    }

    /// One approval broker per agent whose code waits for approval, each
    /// on threads of its own. One that cannot listen is audited and told
    /// to the ops room, and the warden goes on: the agent then has no
    /// Docker at all (nothing serves its socket), never an unchecked one.
    fn start_brokers(&mut self, plan: &Plan, options: &Options) -> Result<()> {
        let Some(shared) = self.approvals.clone() else {
            return Ok(());
        };
        let notifier = broker::Notifier {
            homeserver: self.client_base.clone(),
            token: self.token.clone(),
            ops: self.ops.clone(),
            audit: self.audit_path.clone(),
        };
        // Moved by an option: the plan's file name, in `DIR/<sandbox>/`.
        let place = |dir: &Option<PathBuf>, sandbox: &str, default: &str| {
            let default = PathBuf::from(default);
            match (dir, default.file_name()) {
                (Some(dir), Some(name)) => dir.join(sandbox).join(name),
                _ => default,
            }
        };
        for account in &plan.accounts {
            let Some(approval) = &account.code_approval else {
                continue;
            };
            let broker = broker::Broker {
                agent: account.user_id.clone(),
                sandbox: approval.sandbox.clone(),
                socket: place(&options.approval_sockets, &approval.sandbox, &approval.socket),
                upstream: place(&options.code_sockets, &approval.sandbox, &approval.upstream),
                gid: account.gid,
                timeout: options.approval_timeout,
                shared: shared.clone(),
                notifier: notifier.clone(),
            };
            let socket = broker.socket.display().to_string();
            match broker.spawn() {
                Ok(()) => {
                    let detail = format!("for {} on {socket}", account.user_id);
                    self.audit("approval.broker", "warden", &approval.sandbox, &detail)?;
                }
                Err(error) => {
                    let error = format!("{error:#}");
                    self.audit("approval.unavailable", "warden", &approval.sandbox, &error)?;
                    self.ops_notice(&format!(
                        "approval broker for {} not started ({error}): its agent has no Docker until the warden restarts",
                        approval.sandbox
                    ))?;
                }
            }
        }
        Ok(())
    }

    fn resolve_rooms(&mut self, plan: &Plan) -> Result<()> {
        for room in plan.rooms.iter().chain([&plan.ops_room]) {
            let path = format!("/_matrix/client/v3/directory/room/{}", segment(&room.alias));
            let reply = self.client.get(&path, Some(&self.token))?;
            if !reply.ok() {
                bail!(
                    "failed to look up room `{}` ({})\nhint: the warden starts after `appliance bootstrap` has created the rooms",
                    room.alias,
                    reply.describe()
                );
            }
            let id = reply
                .str("room_id")
                .context("alias lookup answered without `room_id`")?;
            let agents = room
                .members
                .iter()
                .filter(|m| self.agents.contains(*m))
                .cloned()
                .collect();
            if room.alias == plan.ops_room.alias {
                self.ops = id.to_string();
            }
            self.rooms.insert(
                id.to_string(),
                Room {
                    alias: room.alias.clone(),
                    agents,
                },
            );
        }
        Ok(())
    }

    fn audit(&mut self, kind: &str, actor: &str, subject: &str, detail: &str) -> Result<()> {
        let entry = Entry {
            kind,
            actor,
            subject,
            detail,
        };
        self.head = Some(audit::append(&self.audit_path, &entry)?);
        (self.log)(audit::escape_for_terminal(&format!(
            "{kind} {actor} -> {subject}: {detail}"
        )));
        Ok(())
    }

    /// One `/sync`: handles what is new, then saves the position. A crash
    /// in between replays the batch (at least once, never lost).
    fn sync(&mut self, timeout_ms: u64) -> Result<()> {
        let mut path = format!(
            "/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}",
            segment(&sync_filter().to_string())
        );
        if let Some(since) = &self.state.since {
            path.push_str(&format!("&since={}", segment(since)));
        }
        let reply = self.client.get(&path, Some(&self.token))?;
        if !reply.ok() {
            bail!("`/sync` failed ({})", reply.describe());
        }
        let next = reply
            .str("next_batch")
            .context("`/sync` answered without `next_batch`")?
            .to_string();
        if self.state.since.is_some() {
            self.handle_batch(&reply.body)?;
        } else {
            // First start: what was said before the warden existed is not
            // a command to it.
            (self.log)("first sync: starting from now".to_string());
        }
        self.state.since = Some(next);
        self.state.save(&self.state_path)
    }

    fn handle_batch(&mut self, body: &Value) -> Result<()> {
        let Some(joined) = body.pointer("/rooms/join").and_then(Value::as_object) else {
            return Ok(());
        };
        for (room_id, room) in joined {
            if !self.rooms.contains_key(room_id) {
                continue;
            }
            if room.pointer("/timeline/limited").and_then(Value::as_bool) == Some(true) {
                let alias = self.rooms[room_id].alias.clone();
                self.audit(
                    "sync.gap",
                    "warden",
                    &alias,
                    "the homeserver skipped events of this room (more than the timeline limit since the last sync)",
                )?;
            }
            let events = room
                .pointer("/timeline/events")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for event in &events {
                self.handle_event(room_id, event)?;
            }
        }
        Ok(())
    }

    fn handle_event(&mut self, room_id: &str, event: &Value) -> Result<()> {
        match event.get("type").and_then(Value::as_str) {
            Some("m.room.message") => {}
            // Not a message: it counts for neither the loop breaker nor
            // an agent's last message.
            Some("m.reaction") => return self.handle_reaction(room_id, event),
            _ => return Ok(()),
        }
        // `sender` is the homeserver's: it authenticated whoever sent it.
        let sender = event
            .get("sender")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let body = event
            .pointer("/content/body")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if sender == self.me {
            return Ok(());
        }
        let ts = event.get("origin_server_ts").and_then(Value::as_u64).unwrap_or(0);
        if self.agents.contains(&sender) {
            self.state.last_seen.insert(sender.clone(), ts);
        }
        match command::parse(&body) {
            Some(parsed) if self.admins.contains(&sender) => self.obey(room_id, &sender, &body, parsed)?,
            Some(_) => {
                let alias = self.rooms[room_id].alias.clone();
                self.audit("command.refused", &sender, &alias, &format!("not an admin: {body}"))?;
            }
            None => {}
        }
        if self.agents.contains(&sender) {
            if owed::settle(&mut self.state.owed, room_id, &sender, ts) {
                return Ok(());
            }
            self.agent_spoke(room_id)
        } else {
            let content = event.get("content").cloned().unwrap_or_default();
            for agent in owed::mentioned(&content, &self.rooms[room_id].agents) {
                owed::owe(&mut self.state.owed, room_id, agent, ts);
            }
            self.human_spoke(room_id, &sender)
        }
    }

    fn obey(&mut self, room_id: &str, admin: &str, body: &str, parsed: Result<Command, String>) -> Result<()> {
        let alias = self.rooms[room_id].alias.clone();
        self.audit("command", admin, &alias, body)?;
        let reply = match parsed {
            Err(why) => why,
            Ok(Command::Status) => self.status(),
            Ok(Command::Halt { target, stop }) => self.halt(room_id, admin, &target, stop)?,
            Ok(Command::Resume(target)) => self.resume(room_id, admin, &target)?,
            Ok(Command::Allow { agent, host, duration }) => self.allow(admin, &agent, &host, duration.as_deref())?,
            Ok(Command::Deny { agent, host }) => self.deny(admin, &agent, &host)?,
            Ok(Command::Grants) => self.grants_status(),
            Ok(Command::Approve { id, standing }) => {
                self.decide_approval(admin, &id, approvals::Outcome::Approved, standing)?
            }
            Ok(Command::Refuse(id)) => self.decide_approval(admin, &id, approvals::Outcome::Refused, None)?,
        };
        self.notice(room_id, &reply)?;
        let read_only = ["!status", "!grants"].iter().any(|c| body.trim_start().starts_with(c));
        if room_id != self.ops && !read_only {
            self.ops_notice(&format!("{admin} in {alias}: `{}` → {reply}", body.trim()))?;
        }
        Ok(())
    }

    /// What a target names from `room_id`: `all` there means that room's
    /// agents; a named agent, every room it is in.
    fn targets(&self, room_id: &str, target: &Target) -> Result<Targets, String> {
        let pairs: Vec<(String, String)> = match target {
            // In the ops room (no agents), `all` is every agent everywhere.
            Target::All if room_id == self.ops => self
                .rooms
                .iter()
                .flat_map(|(id, room)| room.agents.iter().map(move |a| (id.clone(), a.clone())))
                .collect(),
            Target::All => self.rooms[room_id]
                .agents
                .iter()
                .map(|a| (room_id.to_string(), a.clone()))
                .collect(),
            Target::Agent(name) => {
                let agent = self.agent_named(name)?;
                self.rooms
                    .iter()
                    .filter(|(_, room)| room.agents.contains(&agent))
                    .map(|(id, _)| (id.clone(), agent.clone()))
                    .collect()
            }
        };
        let agents = pairs.iter().map(|(_, agent)| agent.clone()).collect();
        Ok(Targets { pairs, agents })
    }

    fn agent_named(&self, name: &str) -> Result<String, String> {
        let wanted = if name.starts_with('@') {
            name.to_string()
        } else {
            format!("@{name}:")
        };
        self.agents
            .iter()
            .find(|a| **a == wanted || (wanted.ends_with(':') && a.starts_with(&wanted)))
            .cloned()
            .ok_or_else(|| format!("no agent `{name}` in the plan; agents: {}", self.agent_list()))
    }

    fn agent_list(&self) -> String {
        self.agents.iter().cloned().collect::<Vec<_>>().join(", ")
    }

    fn halt(&mut self, room_id: &str, admin: &str, target: &Target, stop: bool) -> Result<String> {
        let Targets { pairs, agents } = match self.targets(room_id, target) {
            Ok(found) => found,
            Err(why) => return Ok(why),
        };
        let mut done = Vec::new();
        for (room, agent) in pairs {
            self.mute(&room, &agent, |m| m.halted_by = Some(admin.to_string()))?;
            done.push(format!("{agent} in {}", self.rooms[&room].alias));
        }
        let mut reply = format!("halted (muted at the homeserver): {}", list_or_none(&done));
        if stop {
            reply.push_str(&format!("; {}", self.stop_sandboxes(admin, &agents)?));
        }
        Ok(reply)
    }

    fn resume(&mut self, room_id: &str, admin: &str, target: &Target) -> Result<String> {
        let Targets { pairs, agents } = match self.targets(room_id, target) {
            Ok(found) => found,
            Err(why) => return Ok(why),
        };
        let mut done = Vec::new();
        for (room, agent) in pairs {
            if self.unmute(&room, &agent, admin, |m| {
                *m = Mute {
                    previous: m.previous,
                    ..Mute::default()
                }
            })? {
                done.push(format!("{agent} in {}", self.rooms[&room].alias));
            }
        }
        if target == &Target::All || !done.is_empty() {
            self.state.streaks.insert(room_id.to_string(), 0);
        }
        let mut reply = format!("resumed: {}", list_or_none(&done));
        let started = self.restart_sandboxes(admin, &agents)?;
        if !started.is_empty() {
            reply.push_str(&format!("; {started}"));
        }
        Ok(reply)
    }

    /// Records why `agent` is muted in `room_id` and makes sure its power
    /// level there is below `events_default`: lowered on the first mute,
    /// lowered again if someone raised it behind the warden's back.
    fn mute(&mut self, room_id: &str, agent: &str, why: impl FnOnce(&mut Mute)) -> Result<()> {
        let alias = self.rooms[room_id].alias.clone();
        let rooms = power::Rooms {
            client: &self.client,
            token: &self.token,
        };
        let levels = rooms.levels(room_id)?;
        let level = power::muted_level(&levels);
        let current = power::entry(&levels, agent);
        let known = self.state.mutes.get(room_id).and_then(|m| m.get(agent)).cloned();
        let mut mute = known.clone().unwrap_or(Mute {
            previous: current,
            ..Mute::default()
        });
        why(&mut mute);
        let lowered = current.is_none_or(|c| c > level);
        if lowered {
            rooms.set_levels(room_id, &power::with_level(&levels, agent, Some(level)))?;
        }
        let detail = match (known.is_some(), lowered) {
            (false, _) => format!(
                "in {alias}: power level {level}, below `events_default`; {}",
                mute.reason()
            ),
            (true, true) => format!(
                "in {alias}: its level had been raised; lowered to {level} again; {}",
                mute.reason()
            ),
            (true, false) => format!("in {alias}: already muted; {}", mute.reason()),
        };
        self.state
            .mutes
            .entry(room_id.to_string())
            .or_default()
            .insert(agent.to_string(), mute);
        self.audit("mute", "warden", agent, &detail)
    }

    /// Clears what `clear` clears; when nothing holds the mute any more,
    /// restores the agent's previous level. True when it was unmuted.
    fn unmute(&mut self, room_id: &str, agent: &str, actor: &str, clear: impl FnOnce(&mut Mute)) -> Result<bool> {
        let Some(mute) = self.state.mutes.get_mut(room_id).and_then(|m| m.get_mut(agent)) else {
            return Ok(false);
        };
        clear(mute);
        if mute.held() {
            return Ok(false);
        }
        let previous = mute.previous;
        let rooms = power::Rooms {
            client: &self.client,
            token: &self.token,
        };
        let levels = rooms.levels(room_id)?;
        rooms.set_levels(room_id, &power::with_level(&levels, agent, previous))?;
        if let Some(room) = self.state.mutes.get_mut(room_id) {
            room.remove(agent);
        }
        let alias = self.rooms[room_id].alias.clone();
        let restored = previous.map_or_else(|| "the room's default".to_string(), |l| l.to_string());
        self.audit(
            "unmute",
            actor,
            agent,
            &format!("in {alias}: power level restored to {restored}"),
        )?;
        Ok(true)
    }

    fn agent_spoke(&mut self, room_id: &str) -> Result<()> {
        let streak = self.state.streaks.entry(room_id.to_string()).or_insert(0);
        *streak += 1;
        let streak = *streak;
        if streak < self.budget {
            return Ok(());
        }
        let agents = self.rooms[room_id].agents.clone();
        let mut muted = Vec::new();
        for agent in agents {
            let looped = self
                .state
                .mutes
                .get(room_id)
                .and_then(|m| m.get(&agent))
                .is_some_and(|m| m.looped);
            if !looped {
                self.mute(room_id, &agent, |m| m.looped = true)?;
                muted.push(agent);
            }
        }
        if muted.is_empty() {
            return Ok(());
        }
        let alias = self.rooms[room_id].alias.clone();
        let detail = format!(
            "{streak} agent messages without a human one (budget {}); muted {}",
            self.budget,
            muted.join(", ")
        );
        self.audit("loop.tripped", "warden", &alias, &detail)?;
        self.notice(
            room_id,
            &format!("loop breaker: {detail}. A message from a human, or an admin's `!resume`, lifts it."),
        )?;
        self.ops_notice(&format!("loop breaker in {alias}: {detail}"))
    }

    fn human_spoke(&mut self, room_id: &str, human: &str) -> Result<()> {
        self.state.streaks.insert(room_id.to_string(), 0);
        let looped: Vec<String> = self
            .state
            .mutes
            .get(room_id)
            .map(|m| m.iter().filter(|(_, m)| m.looped).map(|(a, _)| a.clone()).collect())
            .unwrap_or_default();
        if looped.is_empty() {
            return Ok(());
        }
        let mut lifted = Vec::new();
        for agent in &looped {
            if self.unmute(room_id, agent, human, |m| m.looped = false)? {
                lifted.push(agent.clone());
            }
        }
        let alias = self.rooms[room_id].alias.clone();
        self.audit(
            "loop.lifted",
            human,
            &alias,
            &format!("a human message; unmuted {}", list_or_none(&lifted)),
        )?;
        let text = format!("loop breaker lifted by {human}: unmuted {}", list_or_none(&lifted));
        self.notice(room_id, &text)?;
        self.ops_notice(&format!("{alias}: {text}"))
    }

    fn status(&self) -> String {
        let mut lines = vec![format!(
            "warden status (loop budget: {} agent messages without a human one)",
            self.budget
        )];
        for agent in &self.agents {
            lines.push(self.agent_status(agent));
        }
        for (id, room) in &self.rooms {
            let streak = self.state.streaks.get(id).copied().unwrap_or(0);
            lines.push(format!(
                "{}: {streak} agent message(s) since the last human one",
                room.alias
            ));
        }
        lines.extend(self.sandbox_status());
        lines.extend(self.approvals_status());
        if let Some(head) = &self.head {
            lines.push(format!("audit: {} record(s), head sha256 {}", head.seq, head.sha256));
        }
        lines.join("\n")
    }

    fn agent_status(&self, agent: &str) -> String {
        let mutes: Vec<String> = self
            .state
            .mutes
            .iter()
            .filter_map(|(room, m)| {
                m.get(agent).map(|m| {
                    format!(
                        "muted in {} ({})",
                        self.rooms.get(room).map_or(room.as_str(), |r| r.alias.as_str()),
                        m.reason()
                    )
                })
            })
            .collect();
        let seen = self.state.last_seen.get(agent).map_or_else(
            || "no message seen".to_string(),
            |ms| format!("last message {}", audit::rfc3339(ms / 1000)),
        );
        let muted = if mutes.is_empty() {
            "not muted".to_string()
        } else {
            mutes.join(", ")
        };
        format!("{agent}: {muted}; {seen}")
    }

    /// Posts the audit trail's head to the ops room when it moved since the
    /// last post and `head_every` has passed (at once after a start). Synapse
    /// keeps the room's history: a later rewrite of the trail no longer
    /// matches a head posted there (docs/warden.md, "The audit trail").
    fn post_head_if_due(&mut self) -> Result<()> {
        let Some(head) = self.head.clone() else {
            return Ok(());
        };
        let due = match self.posted {
            None => true,
            Some((seq, at)) => seq != head.seq && at.elapsed() >= self.head_every,
        };
        if due {
            self.ops_notice(&format!("audit head: record {}, sha256 {}", head.seq, head.sha256))?;
            self.posted = Some((head.seq, Instant::now()));
        }
        Ok(())
    }

    /// A notice in the ops room, where the admins (and only they) read it.
    fn ops_notice(&mut self, text: &str) -> Result<()> {
        let ops = self.ops.clone();
        self.notice(&ops, text)
    }

    fn notice(&mut self, room_id: &str, text: &str) -> Result<()> {
        self.post(room_id, text, None).map(|_| ())
    }

    /// Posts a notice, as a reply to `reply_to` when given; the event id
    /// Synapse gave it (what a reaction on a card names).
    fn post(&mut self, room_id: &str, text: &str, reply_to: Option<&str>) -> Result<String> {
        self.sent += 1;
        let txn = format!("warden-{}-{}-{}", std::process::id(), audit::now(), self.sent);
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            segment(room_id),
            segment(&txn)
        );
        let mut content = json!({ "msgtype": "m.notice", "body": text });
        if let Some(event) = reply_to {
            content["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": event } });
        }
        let reply = self.client.put(&path, Some(&self.token), &content)?;
        if !reply.ok() {
            bail!("failed to post a notice in room `{room_id}` ({})", reply.describe());
        }
        Ok(reply.str("event_id").unwrap_or_default().to_string())
    }
}

fn users_of(plan: &Plan, kind: &AccountKind) -> BTreeSet<String> {
    plan.accounts
        .iter()
        .filter(|a| &a.kind == kind)
        .map(|a| a.user_id.clone())
        .collect()
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "nobody".to_string()
    } else {
        items.join(", ")
    }
}

/// Only messages and reactions (an admin's answer to a card) of joined
/// rooms: no state, presence, receipts or typing.
fn sync_filter() -> Value {
    json!({
        "room": {
            "timeline": { "limit": 100, "types": ["m.room.message", "m.reaction"] },
            "state": { "types": [] },
            "ephemeral": { "types": [] },
            "account_data": { "types": [] },
        },
        "presence": { "types": [] },
        "account_data": { "types": [] },
    })
}
