//! On-host bootstrap: what cannot live in the Nix store is created at boot
//! from a plan the generator wrote: secrets first (before Synapse starts),
//! then Matrix accounts, agent tokens and rooms. Every step checks before it
//! acts, so a rerun is a no-op and a run killed anywhere is completed by the
//! next one. Documented in docs/bootstrap.md.

pub mod accounts;
pub mod client;
pub mod lock;
use crate::schema::plan;
pub mod ratelimit;
pub mod rooms;
pub mod secrets;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use self::accounts::{Accounts, Wanted};
use self::client::Client;
use self::plan::{Account, AccountKind, PLAN_SCHEMA, Plan};
use self::secrets::{DIR_MODE, Outcome, Owner, TRAVERSE_MODE};

/// Test-only hook: when set to N, the process aborts (as if killed) right
/// after its N-th step, to prove the next run completes the work. Steps are
/// counted in docs/bootstrap.md. Read only by debug builds (the tests run
/// one), so a release binary ignores it whatever the environment says.
pub const ABORT_HOOK_ENV: &str = "APPLIANCE_TEST_ABORT_AFTER_STEPS";

/// File names inside the directories the plan names.
pub const LOCK_FILE: &str = ".bootstrap.lock";
pub const MASTER_KEY_FILE: &str = "master-key";
pub const TOKEN_FILE: &str = "matrix-token";
pub const ENV_FILE: &str = "env";

#[derive(Debug, Clone)]
pub struct Options {
    pub homeserver: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub secrets_only: bool,
    pub timeout: Duration,
}

/// Reads a plan and refuses one written for another schema.
pub fn load_plan(path: &Path) -> Result<Plan> {
    let text =
        fs::read_to_string(path).with_context(|| format!("failed to read bootstrap plan `{}`", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("failed to parse bootstrap plan `{}`", path.display()))?;
    let schema = value.get("schema").and_then(serde_json::Value::as_u64);
    if schema != Some(u64::from(PLAN_SCHEMA)) {
        bail!(
            "bootstrap plan `{}` has schema {}, this `appliance` reads schema {PLAN_SCHEMA}\nhint: regenerate it with `appliance generate` from the same version",
            path.display(),
            schema.map_or_else(|| "none".to_string(), |s| s.to_string())
        );
    }
    serde_json::from_value(value).with_context(|| format!("failed to parse bootstrap plan `{}`", path.display()))
}

/// Runs the bootstrap; `log` receives one line per thing done or checked,
/// never a secret.
pub fn run(plan: &Plan, options: &Options, log: &mut dyn FnMut(String)) -> Result<()> {
    let mut run = Run {
        plan,
        state_dir: options
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(&plan.state_dir)),
        deadline: Instant::now() + options.timeout,
        log,
        steps: 0,
        abort_after: if cfg!(debug_assertions) {
            std::env::var(ABORT_HOOK_ENV).ok().and_then(|v| v.parse().ok())
        } else {
            None
        },
    };
    run.check_plan()?;
    // The state directory is root's and 0711 (docs/bootstrap.md), whoever
    // made it: a listable or writable one would expose or let others swap
    // the secret directories inside it. A wrong mode is corrected, as
    // everywhere else.
    if secrets::ensure_dir(&run.state_dir, TRAVERSE_MODE, Owner::ROOT)? == Outcome::Repaired {
        (run.log)(format!(
            "state directory `{}`: mode or owner corrected",
            run.state_dir.display()
        ));
    }
    let lock_path = run.state_dir.join(LOCK_FILE);
    let _lock = lock::acquire(&lock_path, run.deadline, || {
        (run.log)(format!(
            "waiting for another bootstrap holding `{}`",
            lock_path.display()
        ));
    })?;
    run.secrets()?;
    if options.secrets_only {
        return Ok(());
    }
    let url = options.homeserver.as_deref().unwrap_or(&plan.homeserver.url);
    if !url.starts_with("http://") {
        bail!(
            "homeserver URL `{url}` is not plain `http://`\nhint: bootstrap talks to the Synapse on its own host, e.g. `--homeserver http://127.0.0.1:8008`"
        );
    }
    let client = Client::new(url, run.deadline, options.timeout);
    client.wait_until_up(|why| (run.log)(format!("waiting for the homeserver at `{}` ({why})", client.base())))?;
    run.matrix(&client)?;
    (run.log)(format!(
        "{} request(s) to {}, {} rate-limited",
        client.requests(),
        client.base(),
        client.rate_limited()
    ));
    Ok(())
}

struct Run<'a> {
    plan: &'a Plan,
    state_dir: PathBuf,
    deadline: Instant,
    log: &'a mut dyn FnMut(String),
    steps: u32,
    abort_after: Option<u32>,
}

impl Run<'_> {
    fn path(&self, relative: &str) -> PathBuf {
        self.state_dir.join(relative)
    }

    /// Creates `relative`'s directory for one consumer, after making each
    /// directory between it and the state dir (`secrets/`, `secrets/_host/`,
    /// ...) root-owned and traversable only.
    fn consumer_dir(&self, relative: &str, owner: Owner) -> Result<Outcome> {
        let mut ancestor = self.state_dir.clone();
        let components: Vec<&str> = relative.split('/').collect();
        for component in &components[..components.len() - 1] {
            ancestor.push(component);
            secrets::ensure_dir(&ancestor, TRAVERSE_MODE, Owner::ROOT)?;
        }
        secrets::ensure_dir(&self.path(relative), DIR_MODE, owner)
    }

    /// Counts a step for the test hook (see `ABORT_HOOK_ENV`).
    fn step(&mut self) {
        self.steps += 1;
        if self.abort_after == Some(self.steps) {
            (self.log)(format!("{ABORT_HOOK_ENV}: aborting after step {}", self.steps));
            std::process::abort();
        }
    }

    fn check_plan(&self) -> Result<()> {
        let bot = &self.plan.bootstrap_account;
        if let Some(clash) = self.plan.accounts.iter().find(|a| a.user_id == bot.user_id) {
            bail!(
                "account `{}` in the plan is the bootstrap's own account\nhint: rename that agent or admin in the spec",
                clash.user_id
            );
        }
        let ops = &self.plan.ops_room;
        if self.plan.rooms.iter().any(|r| r.alias == ops.alias) {
            bail!(
                "room `{}` in the plan is the warden's ops room\nhint: rename that room in the spec",
                ops.alias
            );
        }
        if ops.federate {
            bail!("the ops room `{}` is federated in the plan; it must not be", ops.alias);
        }
        if let Some(agent) = self
            .plan
            .accounts
            .iter()
            .find(|a| a.kind == AccountKind::Agent && ops.members.contains(&a.user_id))
        {
            bail!(
                "agent `{}` is a member of the ops room `{}` in the plan; it holds admins only\nhint: regenerate the plan with `appliance generate`",
                agent.user_id,
                ops.alias
            );
        }
        // Synapse reads 0 as "no limit": never what a plan means.
        if let Some(account) = self.plan.accounts.iter().find(|a| {
            a.rate_limit
                .is_some_and(|l| l.messages_per_second == 0 || l.burst_count == 0)
        }) {
            bail!(
                "account `{}` has a rate limit of 0 in the plan, which Synapse reads as unlimited\nhint: regenerate the plan with `appliance generate`",
                account.user_id
            );
        }
        let dirs: Vec<&String> = self
            .plan
            .accounts
            .iter()
            .map(|a| &a.secrets_dir)
            .chain([&self.plan.synapse.dir, &bot.secrets_dir])
            .collect();
        for (i, relative) in dirs.iter().enumerate() {
            if Path::new(relative).is_absolute() || relative.split('/').any(|c| c.is_empty() || c == "..") {
                bail!("plan path `{relative}` must be relative to the state directory, without `..`");
            }
            // Each directory is owned by (and mounted for) one consumer only.
            for other in &dirs[i + 1..] {
                let nested = |a: &str, b: &str| a == b || b.starts_with(&format!("{a}/"));
                if nested(relative, other) || nested(other, relative) {
                    bail!("plan directories `{relative}` and `{other}` overlap; each consumer needs its own");
                }
            }
        }
        Ok(())
    }

    /// Every secret that does not need the homeserver: Synapse's three,
    /// the master key, and each account's directory.
    fn secrets(&mut self) -> Result<()> {
        let plan = self.plan;
        let mut created = 0;
        let mut repaired = 0;
        let mut count = |outcome: Outcome| match outcome {
            Outcome::Created => created += 1,
            Outcome::Repaired => repaired += 1,
            Outcome::Kept => {}
        };
        let synapse = &plan.synapse;
        let synapse_owner = Owner {
            uid: synapse.uid,
            gid: synapse.gid,
        };
        let dir = self.path(&synapse.dir);
        count(self.consumer_dir(&synapse.dir, synapse_owner)?);
        for file in synapse.files() {
            count(secrets::ensure(&dir.join(file), synapse_owner, || secrets::random_hex(32))?.1);
        }
        let bot_dir = self.path(&plan.bootstrap_account.secrets_dir);
        count(self.consumer_dir(&plan.bootstrap_account.secrets_dir, Owner::ROOT)?);
        count(secrets::ensure(&bot_dir.join(MASTER_KEY_FILE), Owner::ROOT, || secrets::random_hex(32))?.1);
        for account in &plan.accounts {
            let owner = Owner {
                uid: account.uid,
                gid: account.gid,
            };
            count(self.consumer_dir(&account.secrets_dir, owner)?);
        }
        (self.log)(format!(
            "secrets: {created} created, {repaired} repaired, in {}",
            self.state_dir.display()
        ));
        self.step();
        Ok(())
    }

    fn matrix(&mut self, client: &Client) -> Result<()> {
        let accounts = self.accounts(client)?;
        let bot_token = self.ensure_bot(&accounts)?;
        let mut agent_tokens = BTreeMap::new();
        for account in &self.plan.accounts {
            if let Some(token) = self.ensure_account(&accounts, account, &bot_token)? {
                agent_tokens.insert(account.user_id.as_str(), token);
            }
            self.step();
        }
        let room_ids = self.ensure_rooms(client, &bot_token, &agent_tokens)?;
        self.write_room_ids(&agent_tokens, &room_ids)
    }

    /// What registers accounts: the registration secret and the master key
    /// passwords derive from, both made by the secrets step.
    fn accounts<'c>(&self, client: &'c Client) -> Result<Accounts<'c>> {
        let plan = self.plan;
        let shared_secret = secrets::read(
            &self
                .path(&plan.synapse.dir)
                .join(&plan.synapse.registration_shared_secret),
        )?
        .context("the registration shared secret is missing")?;
        let bot_dir = self.path(&plan.bootstrap_account.secrets_dir);
        let master_key = secrets::read(&bot_dir.join(MASTER_KEY_FILE))?.context("the master key is missing")?;
        Ok(Accounts {
            client,
            shared_secret,
            master_key,
        })
    }

    /// The bootstrap's own server-admin account; returns its token.
    fn ensure_bot(&mut self, accounts: &Accounts) -> Result<String> {
        let bot = &self.plan.bootstrap_account;
        let wanted = Wanted {
            localpart: &bot.localpart,
            user_id: &bot.user_id,
            device_id: &bot.device_id,
            admin: true,
        };
        let token_file = self.path(&bot.secrets_dir).join(TOKEN_FILE);
        let (bot_token, outcome) = accounts.ensure_token(&wanted, &token_file, Owner::ROOT, None)?;
        (self.log)(format!("{}: {}", bot.user_id, outcome.label()));
        self.step();
        Ok(bot_token)
    }

    /// One planned account; returns an agent's token (none for a human).
    fn ensure_account(&mut self, accounts: &Accounts, account: &Account, bot_token: &str) -> Result<Option<String>> {
        let wanted = Wanted {
            localpart: &account.localpart,
            user_id: &account.user_id,
            device_id: &account.device_id,
            admin: account.kind == AccountKind::Admin,
        };
        if account.kind == AccountKind::Admin {
            // Registered with the derived password; the admin reads it with
            // `appliance admin password` (stored nowhere) and changes it at
            // first login.
            let outcome = accounts.ensure_human(&wanted, bot_token)?;
            (self.log)(format!("{}: {}", account.user_id, outcome.label()));
            return Ok(None);
        }
        let dir = self.path(&account.secrets_dir);
        let owner = Owner {
            uid: account.uid,
            gid: account.gid,
        };
        let (token, outcome) = accounts.ensure_token(&wanted, &dir.join(TOKEN_FILE), owner, Some(bot_token))?;
        let missing = self.write_env(&dir.join(ENV_FILE), &token, account, owner, None)?;
        (self.log)(format!("{}: {}", account.user_id, outcome.label()));
        if let Some(limit) = account.rate_limit {
            let done = ratelimit::ensure(accounts.client, bot_token, &account.user_id, limit)?;
            (self.log)(format!(
                "{}: rate limit {}/s, burst {} ({})",
                account.user_id,
                limit.messages_per_second,
                limit.burst_count,
                if done == ratelimit::Outcome::Set { "set" } else { "kept" }
            ));
        }
        for var in missing {
            (self.log)(format!(
                "{}: `{var}` is not in {}; only the operator can provide it, add `{var}=...` there",
                account.user_id,
                dir.join(ENV_FILE).display()
            ));
        }
        Ok(Some(token))
    }

    /// The agents' rooms, then the ops room (admins only); returns each
    /// member's room IDs, in plan order.
    fn ensure_rooms(
        &mut self,
        client: &Client,
        bot_token: &str,
        agent_tokens: &BTreeMap<&str, String>,
    ) -> Result<BTreeMap<String, Vec<String>>> {
        let plan = self.plan;
        let rooms = rooms::Rooms {
            client,
            user_id: &plan.bootstrap_account.user_id,
            token: bot_token,
        };
        let tokens: BTreeMap<&str, &str> = agent_tokens.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut room_ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for room in plan.rooms.iter().chain([&plan.ops_room]) {
            let report = rooms.ensure(room, &tokens)?;
            for member in &room.members {
                room_ids.entry(member.clone()).or_default().push(report.room_id.clone());
            }
            (self.log)(room_line(room, report));
            self.step();
        }
        Ok(room_ids)
    }

    /// Agents that filter by room ID (Hermes) learn them now that the rooms
    /// exist.
    fn write_room_ids(
        &mut self,
        agent_tokens: &BTreeMap<&str, String>,
        room_ids: &BTreeMap<String, Vec<String>>,
    ) -> Result<()> {
        for account in self
            .plan
            .accounts
            .iter()
            .filter(|a| !a.room_ids_env.is_empty() || !a.home_room_env.is_empty())
        {
            let Some(token) = agent_tokens.get(account.user_id.as_str()) else {
                continue;
            };
            let ids = room_ids
                .get(account.user_id.as_str())
                .map_or_else(String::new, |ids| ids.join(","));
            let owner = Owner {
                uid: account.uid,
                gid: account.gid,
            };
            let path = self.path(&account.secrets_dir).join(ENV_FILE);
            self.write_env(&path, token, account, owner, Some(&ids))?;
        }
        Ok(())
    }

    /// The agent's env file (Docker `--env-file`): its Matrix token, the
    /// generated secrets it needs, its rooms' IDs when it filters by them
    /// (`room_ids`: `None` keeps the previous run's), and the values only
    /// the operator can add. Existing generated and operator values are
    /// kept. Returns the operator variables still missing.
    fn write_env(
        &self,
        path: &Path,
        token: &str,
        account: &Account,
        owner: Owner,
        room_ids: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        if let Some(text) = secrets::read(path)? {
            for (key, value) in secrets::env_entries(&text) {
                env.insert(key.to_string(), value.to_string());
            }
        }
        let mut out = BTreeMap::new();
        for (var, bytes) in &account.generated_env {
            let value = match env.get(var) {
                Some(v) if !v.is_empty() => v.clone(),
                _ => secrets::random_hex(*bytes as usize)?,
            };
            out.insert(var.clone(), value);
        }
        for var in &account.token_env {
            out.insert(var.clone(), token.to_string());
        }
        for var in &account.room_ids_env {
            match (room_ids, env.get(var)) {
                (Some(ids), _) => out.insert(var.clone(), ids.to_string()),
                (None, Some(previous)) => out.insert(var.clone(), previous.clone()),
                (None, None) => None,
            };
        }
        for var in &account.home_room_env {
            let home = room_ids.map(|ids| ids.split(',').next().unwrap_or_default());
            match (home, env.get(var)) {
                (Some(id), _) if !id.is_empty() => out.insert(var.clone(), id.to_string()),
                (_, Some(previous)) => out.insert(var.clone(), previous.clone()),
                _ => None,
            };
        }
        let mut missing = Vec::new();
        for var in &account.operator_env {
            match env.get(var) {
                Some(value) if !value.is_empty() => {
                    out.insert(var.clone(), value.clone());
                }
                _ => missing.push(var.clone()),
            }
        }
        // A file the operator edited by hand (GH_TOKEN appended) that holds
        // exactly these entries stays as it is: rewritten in our order, its
        // bytes would change on the next run although nothing did.
        let text = match std::fs::read_to_string(path) {
            Ok(existing) if env == out => existing,
            _ => out.iter().map(|(k, v)| format!("{k}={v}\n")).collect(),
        };
        secrets::write(path, &text, owner)?;
        Ok(missing)
    }
}

/// What one room's step did, for the log.
fn room_line(room: &plan::PlannedRoom, report: rooms::RoomReport) -> String {
    let mut line = format!(
        "room {}: {} {}",
        room.alias,
        if report.created { "created" } else { "exists" },
        report.room_id
    );
    if let Some(old) = &report.replaced {
        line.push_str(&format!("; replaced {old}, half-made by an interrupted run"));
    }
    for (what, list) in [
        ("updated", report.updated.iter().map(|s| (*s).to_string()).collect()),
        ("invited", report.invited),
        ("joined", report.joined),
    ] {
        let list: Vec<String> = list;
        if !list.is_empty() {
            line.push_str(&format!("; {what} {}", list.join(", ")));
        }
    }
    line
}
