//! `appliance bootstrap` against a real Synapse running the homeserver
//! settings our generator writes: fresh run, no-op rerun, runs killed
//! mid-way, partial state, a late homeserver, closed registration, rooms
//! closed to outsiders, and agents talking to each other.
//! Each test starts its own Synapse (2-6 s) and groups several claims.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agent_appliance::on_host::bootstrap::client::{Client, Reply, segment};
use agent_appliance::on_host::bootstrap::{ABORT_HOOK_ENV, load_plan};
use agent_appliance::schema::plan::{AccountKind, PLAN_SCHEMA, Plan};
use serde_json::{Value, json};

use crate::support::ports::free_port;
use crate::support::synapse::{KillPoint, KillingProxy, POSTGRES_NAME, Postgres, Synapse, room_events, venv};
use crate::support::{appliance, assert_contains, assert_lacks, root, stderr, stdout};

fn plan_path() -> PathBuf {
    root().join("generated/bootstrap/plan.json")
}

fn plan() -> Plan {
    load_plan(&plan_path()).unwrap()
}

/// One test's world: a state dir, Synapse's data dir, a port.
struct World {
    _temp: tempfile::TempDir,
    state: PathBuf,
    data: PathBuf,
    port: u16,
    url: String,
}

impl World {
    fn new() -> World {
        let temp = tempfile::tempdir().unwrap();
        let port = free_port();
        World {
            state: temp.path().join("state"),
            data: temp.path().join("synapse"),
            url: format!("http://127.0.0.1:{port}"),
            port,
            _temp: temp,
        }
    }

    fn command(&self, extra: &[&str]) -> Command {
        self.command_to(&self.url, extra)
    }

    /// A bootstrap that talks to the homeserver at `url` (a proxy).
    fn command_to(&self, url: &str, extra: &[&str]) -> Command {
        self.command_with_plan(&plan_path(), url, extra)
    }

    /// The same with another plan.
    fn command_with_plan(&self, plan: &Path, url: &str, extra: &[&str]) -> Command {
        let mut command = appliance();
        command
            .arg("bootstrap")
            .arg("--plan")
            .arg(plan)
            .arg("--state-dir")
            .arg(&self.state)
            .args(["--homeserver", url])
            .args(extra)
            .env_remove(ABORT_HOOK_ENV);
        command
    }

    fn bootstrap(&self, extra: &[&str]) -> Output {
        self.command(extra).output().expect("failed to run appliance")
    }

    /// `--secrets-only`, then Synapse, as systemd orders them.
    fn start_synapse(&self, venv: &Path) -> Synapse {
        assert_ok(&self.bootstrap(&["--secrets-only"]));
        let mut synapse = Synapse::start(venv, &self.data, &self.state, self.port);
        synapse.wait_ready();
        synapse
    }

    /// A world with Synapse running (as `start_synapse`), bootstrapped once.
    fn bootstrapped(venv: &Path) -> (World, Synapse) {
        let world = World::new();
        let synapse = world.start_synapse(venv);
        assert_ok(&world.bootstrap(&[]));
        (world, synapse)
    }

    /// The homeserver's answer to a GET of `path` as the user of `token`.
    fn get(&self, path: &str, token: &str) -> Reply {
        self.client().get(path, Some(token)).unwrap()
    }

    fn secret(&self, relative: &str) -> String {
        fs::read_to_string(self.state.join(relative))
            .unwrap()
            .trim()
            .to_string()
    }

    fn client(&self) -> Client {
        Client::new(
            &self.url,
            Instant::now() + Duration::from_secs(60),
            Duration::from_secs(60),
        )
    }

    /// Every file and directory under the state dir: mode, owner, bytes.
    fn snapshot(&self) -> BTreeMap<String, (u32, u32, Vec<u8>)> {
        walkdir::WalkDir::new(&self.state)
            .sort_by_file_name()
            .into_iter()
            .map(|e| e.unwrap())
            .map(|e| {
                let meta = e.metadata().unwrap();
                let bytes = if meta.is_file() {
                    fs::read(e.path()).unwrap()
                } else {
                    Vec::new()
                };
                (e.path().display().to_string(), (meta.mode(), meta.uid(), bytes))
            })
            .collect()
    }

    /// Each agent's and the bootstrap account's devices, by user id.
    fn devices(&self) -> BTreeMap<String, Vec<String>> {
        let client = self.client();
        let bot = plan().bootstrap_account;
        agents()
            .into_iter()
            .chain([(bot.user_id, bot.secrets_dir)])
            .map(|(user, dir)| {
                let token = self.secret(&format!("{dir}/matrix-token"));
                let reply = client.get("/_matrix/client/v3/devices", Some(&token)).unwrap();
                assert!(reply.ok(), "{}", reply.describe());
                let mut ids: Vec<String> = crate::support::json_field_strings(&reply.body["devices"], "device_id");
                ids.sort();
                (user, ids)
            })
            .collect()
    }
}

/// Agents of the default plan: user id -> secrets dir (relative).
fn agents() -> Vec<(String, String)> {
    plan()
        .accounts
        .into_iter()
        .filter(|a| a.kind == AccountKind::Agent)
        .map(|a| (a.user_id, a.secrets_dir))
        .collect()
}

#[track_caller]
fn assert_ok(output: &Output) {
    crate::support::assert_succeeded("bootstrap", output);
}

/// No secret value of the state dir appears in what bootstrap printed.
#[track_caller]
fn assert_no_secret_printed(world: &World, output: &Output) {
    let printed = format!("{}{}", stdout(output), stderr(output));
    // Room IDs in env files are not secrets (bootstrap prints them).
    let public: Vec<String> = plan()
        .accounts
        .into_iter()
        .flat_map(|a| a.room_ids_env.into_iter().chain(a.home_room_env))
        .collect();
    for entry in walkdir::WalkDir::new(&world.state).into_iter().flatten() {
        if entry.file_type().is_file() {
            for line in fs::read_to_string(entry.path()).unwrap().lines() {
                if line.split_once('=').is_some_and(|(k, _)| public.iter().any(|p| p == k)) {
                    continue;
                }
                let value = line.split_once('=').map_or(line, |(_, v)| v).trim();
                assert!(
                    value.is_empty() || !printed.contains(value),
                    "{} was printed",
                    entry.path().display()
                );
            }
        }
    }
}

/// The homeserver's answer to `token` asking where the plan's room alias
/// points.
fn alias_lookup(world: &World, token: &str) -> Reply {
    let alias = &plan().rooms[0].alias;
    world.get(&format!("/_matrix/client/v3/directory/room/{}", segment(alias)), token)
}

fn room_id(world: &World, token: &str) -> String {
    let reply = alias_lookup(world, token);
    assert!(reply.ok(), "{}", reply.describe());
    reply.str("room_id").unwrap().to_string()
}

#[test]
fn synapse_reads_the_secrets_bootstrap_writes() {
    let appliance = agent_appliance::operator::commands::load(&root().join("appliance.toml")).unwrap();
    let settings = agent_appliance::generator::render::synapse::settings(&appliance);
    let plan = agent_appliance::generator::render::plan::plan(&appliance);
    let dir = Path::new(&plan.state_dir).join(&plan.synapse.dir);
    for (key, file) in [
        (
            "registration_shared_secret_path",
            &plan.synapse.registration_shared_secret,
        ),
        ("macaroon_secret_key_path", &plan.synapse.macaroon_secret_key),
        ("form_secret_path", &plan.synapse.form_secret),
    ] {
        assert_eq!(settings[key].as_str().map(PathBuf::from), Some(dir.join(file)), "{key}");
    }
}

/// Runs `--secrets-only` on the default plan edited by `edit`.
fn bootstrap_edited_plan(edit: impl FnOnce(&mut Value)) -> (Output, PathBuf, tempfile::TempDir) {
    let temp = tempfile::tempdir().unwrap();
    let mut plan: Value = serde_json::from_str(&fs::read_to_string(plan_path()).unwrap()).unwrap();
    edit(&mut plan);
    let path = temp.path().join("plan.json");
    fs::write(&path, plan.to_string()).unwrap();
    let state = temp.path().join("state");
    let output = appliance()
        .args(["bootstrap", "--secrets-only", "--plan"])
        .arg(&path)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    (output, state, temp)
}

#[test]
fn refuses_plans_that_would_share_a_secret_directory() {
    // An agent given Synapse's directory would mount Synapse's secrets.
    let (output, state, _temp) = bootstrap_edited_plan(|plan| {
        plan["accounts"][0]["secrets_dir"] = plan["synapse"]["dir"].clone();
    });
    assert!(!output.status.success());
    assert_contains(stderr(&output), "overlap; each consumer needs its own");
    assert!(!state.exists());
    let (output, _, _temp) = bootstrap_edited_plan(|plan| {
        plan["accounts"][0]["user_id"] = plan["bootstrap_account"]["user_id"].clone();
    });
    assert_contains(stderr(&output), "is the bootstrap's own account");
    let (output, _, _temp) = bootstrap_edited_plan(|plan| {
        plan["accounts"][0]["secrets_dir"] = json!("secrets/../../etc");
    });
    assert_contains(stderr(&output), "must be relative to the state directory");
    // Synapse reads a rate limit of 0 as "unlimited".
    let (output, state, _temp) = bootstrap_edited_plan(|plan| {
        plan["accounts"][0]["rate_limit"]["messages_per_second"] = json!(0);
    });
    assert_contains(stderr(&output), "which Synapse reads as unlimited");
    assert!(!state.exists());
}

#[test]
fn refuses_an_https_homeserver() {
    let world = World {
        url: "https://matrix.example.org".to_string(),
        ..World::new()
    };
    let output = world.bootstrap(&[]);
    assert!(!output.status.success());
    assert_contains(stderr(&output), "is not plain `http://`");
}

#[test]
fn secrets_only_creates_private_files_and_is_stable() {
    let world = World::new();
    // An existing state dir and the directories inside it get the modes
    // docs/bootstrap.md gives, like every other wrong mode.
    fs::create_dir_all(world.state.join("secrets")).unwrap();
    fs::set_permissions(&world.state, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(world.state.join("secrets"), fs::Permissions::from_mode(0o755)).unwrap();
    let first = world.bootstrap(&["--secrets-only"]);
    assert_ok(&first);
    assert_no_secret_printed(&world, &first);
    let plan = plan();
    let synapse_dir = world.state.join(&plan.synapse.dir);
    for file in plan.synapse.files() {
        let meta = fs::metadata(synapse_dir.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o400, "{file}");
        assert_eq!(fs::read_to_string(synapse_dir.join(file)).unwrap().len(), 64);
    }
    for account in &plan.accounts {
        let meta = fs::metadata(world.state.join(&account.secrets_dir)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{}", account.secrets_dir);
    }
    assert_eq!(
        fs::metadata(world.state.join("secrets")).unwrap().permissions().mode() & 0o777,
        0o711
    );
    let mode = |p: &str| fs::metadata(world.state.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("secrets/_host"), 0o711);
    assert_eq!(mode(""), 0o711);
    if rustix::process::geteuid().is_root() {
        let meta = fs::metadata(synapse_dir.join(&plan.synapse.registration_shared_secret)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (plan.synapse.uid, plan.synapse.gid));
        let casper = plan.accounts.iter().find(|a| a.localpart == "casper").unwrap();
        let meta = fs::metadata(world.state.join(&casper.secrets_dir)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (casper.uid, casper.gid));
    }
    // A Synapse-created world-readable secret gets its mode fixed.
    let secret = synapse_dir.join(&plan.synapse.registration_shared_secret);
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let before = world.snapshot();
    assert_ok(&world.bootstrap(&["--secrets-only"]));
    assert_eq!(fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o400);
    let after = world.snapshot();
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    for (path, (_, _, bytes)) in &before {
        assert_eq!(bytes, &after[path].2, "{path} changed");
    }
}

#[test]
fn concurrent_runs_are_excluded_by_the_lock() {
    let world = World::new();
    assert_ok(&world.bootstrap(&["--secrets-only"]));
    let lock = fs::File::open(world.state.join(".bootstrap.lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let output = world.bootstrap(&["--secrets-only", "--timeout", "1"]);
    assert!(!output.status.success());
    assert_contains(stdout(&output), "waiting for another bootstrap");
    assert!(
        stderr(&output).contains("another `appliance bootstrap` holds")
            && stderr(&output).contains("hint: wait for it to finish, or raise `--timeout`"),
        "{}",
        stderr(&output)
    );
    drop(lock);
    assert_ok(&world.bootstrap(&["--secrets-only", "--timeout", "1"]));
}

#[test]
fn gives_up_clearly_when_no_homeserver_answers() {
    let world = World::new();
    let started = Instant::now();
    let output = world.bootstrap(&["--timeout", "1"]);
    assert!(!output.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let err = stderr(&output);
    assert_contains(
        &err,
        format!("error: the homeserver at `{}` did not answer within 1 s", world.url),
    );
    assert_contains(&err, "hint: is Synapse running");
}

#[test]
fn refuses_a_plan_of_another_schema() {
    let temp = tempfile::tempdir().unwrap();
    let mut plan: Value = serde_json::from_str(&fs::read_to_string(plan_path()).unwrap()).unwrap();
    plan["schema"] = json!(1);
    let path = temp.path().join("plan.json");
    fs::write(&path, plan.to_string()).unwrap();
    let output = appliance()
        .args(["bootstrap", "--secrets-only", "--plan"])
        .arg(&path)
        .arg("--state-dir")
        .arg(temp.path().join("state"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_contains(
        stderr(&output),
        format!("has schema 1, this `appliance` reads schema {PLAN_SCHEMA}"),
    );
    assert!(!temp.path().join("state").exists());
}

/// Fresh bootstrap, byte-identical rerun, closed registration, rooms closed
/// to outsiders, agents hearing each other.
#[test]
fn fresh_bootstrap_rerun_outsiders_and_agents_talking() {
    let Some(venv) = venv() else { return };
    let world = World::new();
    let _synapse = world.start_synapse(&venv);

    let fresh = world.bootstrap(&[]);
    assert_ok(&fresh);
    assert_no_secret_printed(&world, &fresh);
    let out = stdout(&fresh);
    for account in plan().accounts.iter().filter(|a| a.kind == AccountKind::Agent) {
        let (user, dir) = (&account.user_id, &account.secrets_dir);
        assert_contains(&out, format!("{user}: registered"));
        let env = world.secret(&format!("{dir}/env"));
        let token = world.secret(&format!("{dir}/matrix-token"));
        assert!(!account.token_env.is_empty());
        for var in &account.token_env {
            assert!(
                env.lines().any(|l| l == format!("{var}={token}")),
                "{dir}/env lacks {var}"
            );
        }
        for file in ["matrix-token", "env"] {
            let meta = fs::metadata(world.state.join(dir).join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o400);
        }
    }
    assert!(world.secret("secrets/melchior/env").contains("OPENCLAW_GATEWAY_TOKEN="));
    // The admin's password is derived when asked for, never stored.
    assert!(!world.state.join("secrets/_host/admins/gendo/initial-password").exists());
    assert_contains(&out, "room #magi:magi: created");
    // Every agent gets the plan's message rate limit, never unlimited.
    assert_rate_limits(&world);
    assert_contains(&out, "@casper:magi: rate limit 8/s, burst 120 (set)");

    // Rerun: nothing created, no byte changed, no device added.
    let files = world.snapshot();
    let devices = world.devices();
    let the_plan = plan();
    let device_ids: BTreeMap<&str, &str> = the_plan
        .accounts
        .iter()
        .map(|a| (a.user_id.as_str(), a.device_id.as_str()))
        .chain([(
            the_plan.bootstrap_account.user_id.as_str(),
            the_plan.bootstrap_account.device_id.as_str(),
        )])
        .collect();
    assert_eq!(devices.len(), 5, "{devices:?}");
    for (user, ids) in &devices {
        assert_eq!(ids, &vec![device_ids[user.as_str()].to_string()], "{user}");
    }
    let started = Instant::now();
    let rerun = world.bootstrap(&[]);
    let took = started.elapsed();
    assert_ok(&rerun);
    let out = stdout(&rerun);
    assert!(!out.contains(": registered") && !out.contains(": repaired"), "{out}");
    assert_contains(&out, "secrets: 0 created, 0 repaired");
    assert!(
        out.contains("room #magi:magi: exists") && !out.contains("invited") && !out.contains("joined"),
        "{out}"
    );
    assert_eq!(world.snapshot(), files, "a rerun changed the state dir");
    assert_eq!(world.devices(), devices, "a rerun changed devices");
    assert!(took < Duration::from_secs(2), "rerun took {took:?}");
    assert_contains(&out, "@casper:magi: rate limit 8/s, burst 120 (kept)");

    let client = world.client();
    // Registration is closed to everyone without the shared secret.
    for body in [
        json!({ "username": "intruder", "password": "intruder-password", "auth": { "type": "m.login.dummy" } }),
        json!({ "username": "intruder", "password": "intruder-password" }),
    ] {
        let reply = client.post("/_matrix/client/v3/register", None, &body).unwrap();
        assert_eq!(reply.status, 403, "open registration: {}", reply.describe());
    }
    let reply = client
        .post("/_matrix/client/v3/register?kind=guest", None, &json!({}))
        .unwrap();
    assert_eq!(reply.status, 403, "guest registration: {}", reply.describe());

    // An outsider with a valid account on this server (made here through
    // the shared secret) cannot join, read, or post in the room.
    let outsider = register_outsider(&world);
    let melchior = world.secret("secrets/melchior/matrix-token");
    let room = room_id(&world, &melchior);
    // Hermes filters rooms by ID only: its env file names the room's.
    let casper_env = world.secret("secrets/casper/env");
    assert!(
        casper_env.lines().any(|l| l == format!("MATRIX_ALLOWED_ROOMS={room}")),
        "{casper_env}"
    );
    // ... and its home room, without which its first answer in every
    // thread is a "No home channel is set" notice.
    assert!(
        casper_env.lines().any(|l| l == format!("MATRIX_HOME_ROOM={room}")),
        "{casper_env}"
    );
    let alias = &plan().rooms[0].alias;
    let attempts = [
        client.post(
            &format!("/_matrix/client/v3/join/{}", segment(alias)),
            Some(&outsider),
            &json!({}),
        ),
        client.post(
            &format!("/_matrix/client/v3/rooms/{}/join", segment(&room)),
            Some(&outsider),
            &json!({}),
        ),
        client.get(
            &format!("/_matrix/client/v3/rooms/{}/messages?dir=b", segment(&room)),
            Some(&outsider),
        ),
        client.get(
            &format!("/_matrix/client/v3/rooms/{}/state", segment(&room)),
            Some(&outsider),
        ),
        client.put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/outsider1",
                segment(&room)
            ),
            Some(&outsider),
            &json!({ "msgtype": "m.text", "body": "let me in" }),
        ),
    ];
    for reply in attempts {
        let reply = reply.unwrap();
        assert_eq!(reply.status, 403, "outsider got {}", reply.describe());
    }
    // Nor can it pull an agent into a room of its own (or a DM): only
    // server admins may invite.
    let own_room = crate::support::synapse::create_room(&client, &outsider, "private_chat");
    let invite = client
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", segment(&own_room)),
            Some(&outsider),
            &json!({ "user_id": "@casper:magi" }),
        )
        .unwrap();
    assert_eq!(
        invite.status,
        403,
        "outsider could invite an agent: {}",
        invite.describe()
    );
    let dm = client
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&outsider),
            &json!({ "is_direct": true, "invite": ["@melchior:magi"] }),
        )
        .unwrap();
    assert_eq!(
        dm.status,
        403,
        "outsider could open a DM with an agent: {}",
        dm.describe()
    );

    // A rate limit changed behind bootstrap's back is set back.
    let admin = world.secret("secrets/_host/bootstrap/matrix-token");
    let drift = client
        .post(
            "/_synapse/admin/v1/users/%40casper%3Amagi/override_ratelimit",
            Some(&admin),
            &json!({ "messages_per_second": 0, "burst_count": 0 }),
        )
        .unwrap();
    assert!(drift.ok(), "{}", drift.describe());
    let repair = world.bootstrap(&[]);
    assert_ok(&repair);
    assert_contains(stdout(&repair), "@casper:magi: rate limit 8/s, burst 120 (set)");
    assert_rate_limits(&world);

    // Each agent speaks once; every other agent reads every message.
    let tokens: Vec<(String, String)> = agents()
        .into_iter()
        .map(|(user, dir)| (user, world.secret(&format!("{dir}/matrix-token"))))
        .collect();
    let mut sent = Vec::new();
    for (i, (user, token)) in tokens.iter().enumerate() {
        let body = format!("hello from {user} #{i}");
        let reply = client
            .put(
                &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t{i}", segment(&room)),
                Some(token),
                &json!({ "msgtype": "m.text", "body": body }),
            )
            .unwrap();
        assert!(reply.ok(), "{user} could not send: {}", reply.describe());
        sent.push((user.clone(), body));
    }
    for (reader, token) in &tokens {
        let seen: Vec<(String, String)> = room_events(&client, token, &room, 50)
            .iter()
            .filter(|e| e["type"] == "m.room.message")
            .map(|e| {
                (
                    e["sender"].as_str().unwrap().to_string(),
                    e["content"]["body"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for message in sent.iter().filter(|(sender, _)| sender != reader) {
            assert!(seen.contains(message), "{reader} did not receive {message:?}");
        }
    }

    // The room is what the plan says: invite-only, not federated, the admin
    // at 100, agents at the default 0, the creator not listed (room v12).
    let state = |event: &str| {
        let reply = client
            .get(
                &format!("/_matrix/client/v3/rooms/{}/state/{event}/", segment(&room)),
                Some(&melchior),
            )
            .unwrap();
        assert!(reply.ok(), "{event}: {}", reply.describe());
        reply.body
    };
    assert_eq!(state("m.room.join_rules")["join_rule"], "invite");
    assert_eq!(state("m.room.create")["m.federate"], false);
    assert_eq!(state("m.room.guest_access")["guest_access"], "forbidden");
    assert_eq!(state("m.room.name")["name"], plan().rooms[0].name);
    let levels = state("m.room.power_levels");
    assert_eq!(levels["users"], json!({ "@gendo:magi": 100 }));
    assert_eq!(levels["users_default"], 0);

    // The default spec gives balthasar's GitHub token to the egress proxy
    // (`credentials`): nothing is asked for, and a GH_TOKEN an older setup
    // added by hand leaves the env file at the next run (Docker would pass
    // it beside the placeholder).
    assert!(!out.contains("`GH_TOKEN` is not in"), "{out}");
    let env_path = world.state.join("secrets/balthasar/env");
    fs::set_permissions(&env_path, fs::Permissions::from_mode(0o600)).unwrap();
    let clean = fs::read_to_string(&env_path).unwrap();
    assert!(!clean.contains("GH_TOKEN="), "{clean}");
    fs::write(&env_path, format!("{clean}GH_TOKEN=fake-operator-token\n")).unwrap();
    assert_ok(&world.bootstrap(&[]));
    assert_eq!(fs::read_to_string(&env_path).unwrap(), clean, "the old GH_TOKEN stays");

    // Without `credentials` (the plan then lists it as the operator's), a
    // value only the operator has is asked for, then kept once added by hand.
    let operator_plan = world.state.with_file_name("operator-plan.json");
    let mut edited: Value = serde_json::from_str(&fs::read_to_string(plan_path()).unwrap()).unwrap();
    for account in edited["accounts"].as_array_mut().unwrap() {
        if account["localpart"] == "balthasar" {
            account["operator_env"] = json!(["GH_TOKEN"]);
        }
    }
    fs::write(&operator_plan, edited.to_string()).unwrap();
    let with_plan = |extra: &[&str]| {
        world
            .command_with_plan(&operator_plan, &world.url, extra)
            .output()
            .expect("failed to run appliance")
    };
    let asked = with_plan(&[]);
    assert_ok(&asked);
    assert!(stdout(&asked).contains("`GH_TOKEN` is not in"), "{}", stdout(&asked));
    fs::set_permissions(&env_path, fs::Permissions::from_mode(0o600)).unwrap();
    let mut env = fs::read_to_string(&env_path).unwrap();
    env.push_str("GH_TOKEN=fake-operator-token\n");
    fs::write(&env_path, &env).unwrap();
    let modified = || fs::metadata(&env_path).unwrap().modified().unwrap();
    let appended = modified();
    let again = with_plan(&[]);
    assert_ok(&again);
    assert_lacks(stdout(&again), "@balthasar:magi: `GH_TOKEN` is not in");
    // The operator's file is left byte for byte, mtime included: rewritten
    // in sorted order, it changed under the operator's hands (and under the
    // rehearsal's "a rerun changes nothing").
    assert_eq!(fs::read_to_string(&env_path).unwrap(), env);
    assert_eq!(modified(), appended, "bootstrap rewrote the operator's env file");
}

/// Registers an account that is in no room, returns its token.
/// Synapse holds, for every agent, exactly the plan's rate limit.
fn assert_rate_limits(world: &World) {
    let admin = world.secret("secrets/_host/bootstrap/matrix-token");
    let client = world.client();
    for account in plan().accounts.iter().filter(|a| a.kind == AccountKind::Agent) {
        let limit = account.rate_limit.expect("every agent has a rate limit in the plan");
        assert!(limit.messages_per_second > 0 && limit.burst_count > 0, "{limit:?}");
        let reply = client
            .get(
                &format!(
                    "/_synapse/admin/v1/users/{}/override_ratelimit",
                    segment(&account.user_id)
                ),
                Some(&admin),
            )
            .unwrap();
        assert!(reply.ok(), "{}", reply.describe());
        assert_eq!(
            reply.body,
            json!({ "messages_per_second": limit.messages_per_second, "burst_count": limit.burst_count }),
            "{}",
            account.user_id
        );
    }
}

fn register_outsider(world: &World) -> String {
    let client = world.client();
    let secret = world.secret("secrets/_host/synapse/registration-shared-secret");
    crate::support::synapse::register_with_shared_secret(&client, &secret, "outsider", "outsider-password")
}

/// Runs killed after some steps are completed by the next run; a missing
/// token file is repaired on the same device.
#[test]
fn killed_runs_and_lost_tokens_are_completed_by_the_next_run() {
    let Some(venv) = venv() else { return };
    let world = World::new();
    let _synapse = world.start_synapse(&venv);
    let plan = plan();
    let first_agent = &plan.accounts[0];
    let second_agent = &plan.accounts[1];

    // Step 1 is the secrets, 2 the bootstrap account, 3 the first account.
    let killed = world.command(&[]).env(ABORT_HOOK_ENV, "3").output().unwrap();
    assert_eq!(killed.status.signal(), Some(libc_sigabrt()), "{}", stdout(&killed));
    assert!(world.state.join(&first_agent.secrets_dir).join("matrix-token").exists());
    assert!(
        !world
            .state
            .join(&second_agent.secrets_dir)
            .join("matrix-token")
            .exists()
    );

    // Killed again after every account but before the room (one step per
    // account, then rooms).
    let last_account_step = 2 + plan.accounts.len();
    let killed = world
        .command(&[])
        .env(ABORT_HOOK_ENV, last_account_step.to_string())
        .output()
        .unwrap();
    assert_eq!(killed.status.signal(), Some(libc_sigabrt()), "{}", stdout(&killed));
    let out = stdout(&killed);
    assert_contains(&out, format!("{}: token verified", first_agent.user_id));
    assert_contains(&out, format!("{}: registered", second_agent.user_id));
    assert_lacks(&out, "room ");

    let completed = world.bootstrap(&[]);
    assert_ok(&completed);
    assert_contains(stdout(&completed), "room #magi:magi: created");
    let devices = world.devices();
    assert!(devices.values().all(|d| d.len() == 1), "{devices:?}");

    // Partial state: the token and env files of one agent are lost (the
    // account exists). The next run logs in again onto the same device and
    // keeps the agent's other generated secrets.
    let melchior = plan.accounts.iter().find(|a| a.localpart == "melchior").unwrap();
    let dir = world.state.join(&melchior.secrets_dir);
    let gateway_before = world.secret(&format!("{}/env", melchior.secrets_dir));
    let gateway_before = gateway_before
        .lines()
        .find(|l| l.starts_with("OPENCLAW_GATEWAY_TOKEN="))
        .unwrap()
        .to_string();
    fs::remove_file(dir.join("matrix-token")).unwrap();
    let repaired = world.bootstrap(&[]);
    assert_ok(&repaired);
    assert_contains(stdout(&repaired), format!("{}: repaired", melchior.user_id));
    assert_eq!(world.devices(), devices, "repair added a device");
    let env = world.secret(&format!("{}/env", melchior.secrets_dir));
    assert!(env.contains(&gateway_before), "the gateway token changed");
    assert!(env.contains(&format!(
        "MATRIX_ACCESS_TOKEN={}",
        world.secret(&format!("{}/matrix-token", melchior.secrets_dir))
    )));

    // A revoked token is replaced the same way.
    let token = world.secret(&format!("{}/matrix-token", melchior.secrets_dir));
    let reply = world
        .client()
        .post("/_matrix/client/v3/logout", Some(&token), &json!({}))
        .unwrap();
    assert!(reply.ok(), "{}", reply.describe());
    let repaired = world.bootstrap(&[]);
    assert_ok(&repaired);
    assert!(stdout(&repaired).contains(&format!("{}: repaired", melchior.user_id)));
    assert_eq!(world.devices(), devices, "repair added a device");

    // And after all that, a rerun is a no-op again.
    let files = world.snapshot();
    assert_ok(&world.bootstrap(&[]));
    assert_eq!(world.snapshot(), files);
}

/// `std::process::abort` ends the process with SIGABRT.
fn libc_sigabrt() -> i32 {
    6
}

/// `Child::kill` sends SIGKILL.
fn libc_sigkill() -> i32 {
    9
}

/// Bootstrap started before Synapse waits for it.
#[test]
fn bootstrap_waits_for_a_homeserver_that_starts_later() {
    let Some(venv) = venv() else { return };
    let world = World::new();
    assert_ok(&world.bootstrap(&["--secrets-only"]));
    let child = world
        .command(&["--timeout", "90"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _synapse = Synapse::start(&venv, &world.data, &world.state, world.port);
    let output = child.wait_with_output().unwrap();
    assert_ok(&output);
    let out = stdout(&output);
    assert_contains(&out, format!("waiting for the homeserver at `{}`", world.url));
    assert_contains(&out, "room #magi:magi: created");
}

/// Real SIGKILLs at arbitrary moments of fresh runs (not only at step
/// boundaries): the next run completes, with one device per account.
/// Bootstrap run through a proxy that SIGKILLs it at `point` of its first
/// `createRoom`: the kill lands exactly there, whatever the machine's
/// speed. Returns the proxy, which still forwards Synapse's answer.
fn killed_at_create_room(
    world: &World,
    point: KillPoint,
    held: impl Fn() -> bool + Send + Sync + 'static,
) -> KillingProxy {
    let proxy = KillingProxy::start(&world.url, "POST /_matrix/client/v3/createRoom", point, held);
    let child = world
        .command_to(&proxy.url, &[])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    proxy.set_victim(child.id());
    let output = child.wait_with_output().unwrap();
    let out = stdout(&output);
    assert!(
        proxy.fired(),
        "bootstrap never sent `createRoom`:\n{out}\n{}",
        stderr(&output)
    );
    assert_eq!(
        output.status.signal(),
        Some(libc_sigkill()),
        "{out}\n{}",
        stderr(&output)
    );
    // Every account was done (the room is the last step) and no room was.
    for account in &plan().accounts {
        assert_contains(&out, format!("{}: ", account.user_id));
    }
    assert_lacks(&out, "room #");
    proxy
}

/// The room behind the plan's alias, as the homeserver holds it (read with
/// the admin API, which sees every room): made by the bootstrap account,
/// invite-only, not federated, history for invited members, no guests,
/// the plan's name, topic, alias and power levels; agents joined, humans
/// invited.
#[track_caller]
fn assert_room_as_planned(world: &World) {
    let plan = plan();
    let planned = &plan.rooms[0];
    let admin = world.secret(&format!("{}/matrix-token", plan.bootstrap_account.secrets_dir));
    let room = room_id(world, &admin);
    let reply = world.get(&format!("/_synapse/admin/v1/rooms/{}/state", segment(&room)), &admin);
    assert!(reply.ok(), "{}", reply.describe());
    let events = reply.body["state"].as_array().unwrap().clone();
    let state = |kind: &str, key: &str| {
        events
            .iter()
            .find(|e| e["type"] == kind && e["state_key"] == key)
            .unwrap_or_else(|| panic!("room {room} has no `{kind}` `{key}`: {events:#?}"))
            .clone()
    };
    let create = state("m.room.create", "");
    assert_eq!(create["sender"], plan.bootstrap_account.user_id.as_str());
    assert_eq!(create["content"]["m.federate"], false);
    assert_eq!(state("m.room.join_rules", "")["content"]["join_rule"], "invite");
    assert_eq!(
        state("m.room.history_visibility", "")["content"]["history_visibility"],
        "invited"
    );
    assert_eq!(state("m.room.guest_access", "")["content"]["guest_access"], "forbidden");
    assert_eq!(
        state("m.room.canonical_alias", "")["content"]["alias"],
        planned.alias.as_str()
    );
    assert_eq!(state("m.room.name", "")["content"]["name"], planned.name.as_str());
    assert_eq!(
        state("m.room.topic", "")["content"]["topic"],
        planned.topic.as_deref().unwrap()
    );
    let levels = state("m.room.power_levels", "")["content"].clone();
    assert_eq!(levels["users"], json!(planned.power_levels));
    for (what, level) in [
        ("users_default", 0),
        ("invite", 100),
        ("kick", 100),
        ("ban", 100),
        ("state_default", 50),
    ] {
        assert_eq!(levels[what], level, "{what}: {levels}");
    }
    for account in &plan.accounts {
        let membership = state("m.room.member", &account.user_id)["content"]["membership"].clone();
        let expected = if account.kind == AccountKind::Agent {
            "join"
        } else {
            "invite"
        };
        assert_eq!(membership, expected, "{}", account.user_id);
    }
}

/// The room as planned, and a complete run then changes nothing: no file,
/// no device, no room state.
#[track_caller]
fn assert_settled(world: &World) {
    assert_room_as_planned(world);
    let files = world.snapshot();
    let devices = world.devices();
    let rerun = world.bootstrap(&[]);
    assert_ok(&rerun);
    let out = stdout(&rerun);
    eprintln!(
        "rerun: {}",
        out.lines().find(|l| l.contains("request(s)")).unwrap_or_default()
    );
    assert_contains(&out, "room #magi:magi: exists");
    for change in [
        ": registered",
        ": repaired",
        "; updated",
        "; invited",
        "; joined",
        ": created",
    ] {
        assert!(!out.contains(change), "a rerun did `{change}`:\n{out}");
    }
    assert_eq!(world.snapshot(), files, "a rerun changed the state dir");
    assert_eq!(world.devices(), devices, "a rerun changed devices");
}

/// A run killed as it creates the room, before Synapse saw the request
/// and after Synapse made the room but before the run's next request, is
/// completed by the next run. The kills are made by a proxy at those exact
/// requests, not by timers that may miss them.
#[test]
fn runs_killed_around_the_room_creation_are_completed_by_the_next_run() {
    let Some(venv) = venv() else { return };
    let world = World::new();
    let _synapse = world.start_synapse(&venv);
    let admin_token = || world.secret(&format!("{}/matrix-token", plan().bootstrap_account.secrets_dir));
    let alias_resolves = |token: &str| alias_lookup(&world, token).ok();

    killed_at_create_room(&world, KillPoint::BeforeForwarding, || true);
    assert!(
        !alias_resolves(&admin_token()),
        "the room was made without `createRoom`"
    );

    killed_at_create_room(&world, KillPoint::AfterAnswer, || true);
    assert!(
        alias_resolves(&admin_token()),
        "Synapse answered `createRoom` but made no room"
    );

    let completed = world.bootstrap(&[]);
    assert_ok(&completed);
    let out = stdout(&completed);
    assert_contains(&out, "room #magi:magi: exists");
    assert_contains(&out, "joined @melchior:magi");
    let devices = world.devices();
    assert!(devices.values().all(|d| d.len() == 1), "{devices:?}");
    assert_settled(&world);
    // No leftover temporary files.
    let partial: Vec<_> = walkdir::WalkDir::new(&world.state)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}

/// The kill that used to leave the room unusable: bootstrap is killed
/// while Synapse is inside its `createRoom`, after the room, its alias and
/// its creator exist and before its settings do, and the next run starts
/// before Synapse finished. That run finds the room half-made by its own
/// account and completes it; when Synapse then finishes the old request,
/// the room is still as planned and a rerun changes nothing.
#[test]
fn a_room_half_made_when_bootstrap_was_killed_is_completed() {
    let Some(venv) = venv() else { return };
    let world = World::new();
    assert_ok(&world.bootstrap(&["--secrets-only"]));
    let (mut synapse, point) = Synapse::start_with_hold_point(&venv, &world.data, &world.state, world.port);
    synapse.wait_ready();

    point.arm("m.room.power_levels", "hold");
    let held_marker = point.dir.join("held");
    let proxy = killed_at_create_room(&world, KillPoint::WhileHeld, move || held_marker.exists());
    assert!(point.held());

    let completed = world.bootstrap(&[]);
    assert_ok(&completed);
    let out = stdout(&completed);
    assert_contains(&out, "room #magi:magi: exists");
    assert_contains(&out, "updated join rule");
    assert_contains(&out, "power levels");
    assert_room_as_planned(&world);

    // Synapse finishes the old request now (its late invites fail on
    // members already there); the room stays as planned.
    point.release();
    proxy.wait_answered(Duration::from_secs(60));
    assert_settled(&world);
}

/// A power cut while Synapse creates the room (the module ends Synapse
/// mid-request). Cut before the creator joined, the room is an empty shell
/// of the bootstrap's own: the next run moves the alias to a new room. Cut
/// after the creator joined but before the settings, the next run
/// completes the room.
#[test]
fn a_room_half_made_by_a_power_cut_is_recreated_or_completed() {
    let Some(venv) = venv() else { return };
    let world = World::new();
    assert_ok(&world.bootstrap(&["--secrets-only"]));
    let start = || {
        let (mut synapse, point) = Synapse::start_with_hold_point(&venv, &world.data, &world.state, world.port);
        synapse.wait_ready();
        (synapse, point)
    };
    let cut_at = |event_type: &str| {
        let (mut synapse, point) = start();
        point.arm(event_type, "crash");
        let cut = world.bootstrap(&[]);
        assert!(!cut.status.success(), "{}", stdout(&cut));
        let started = Instant::now();
        while synapse.exited().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "synapse did not stop at `{event_type}`"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let admin = || world.secret(&format!("{}/matrix-token", plan().bootstrap_account.secrets_dir));

    cut_at("m.room.member");
    let synapse = start();
    let shell = room_id(&world, &admin());
    let replaced = world.bootstrap(&[]);
    assert_ok(&replaced);
    let out = stdout(&replaced);
    assert!(
        out.contains("room #magi:magi: created !") && out.contains(&format!("; replaced {shell}, half-made")),
        "{out}"
    );
    assert_ne!(room_id(&world, &admin()), shell);
    assert_room_as_planned(&world);

    // Start again from no room: the alias removed as an operator would.
    let reply = world
        .client()
        .delete(
            &format!("/_matrix/client/v3/directory/room/{}", segment(&plan().rooms[0].alias)),
            Some(&admin()),
        )
        .unwrap();
    assert!(reply.ok(), "{}", reply.describe());
    drop(synapse);
    cut_at("m.room.power_levels");
    let _synapse = start();
    let completed = world.bootstrap(&[]);
    assert_ok(&completed);
    let out = stdout(&completed);
    assert!(
        out.contains("room #magi:magi: exists") && out.contains("updated join rule, power levels"),
        "{out}"
    );
    assert_settled(&world);
}

/// A room someone else made under the plan's alias is refused, even when
/// it is invite-only and not federated: its creator holds power in it that
/// no plan gave them.
#[test]
fn a_room_someone_else_made_under_the_alias_is_refused() {
    let Some(venv) = venv() else { return };
    let world = World::new();
    let _synapse = world.start_synapse(&venv);
    let outsider = register_outsider(&world);
    let planned = &plan().rooms[0];
    let reply = world
        .client()
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&outsider),
            &json!({
                "preset": "private_chat",
                "room_alias_name": planned.alias_localpart,
                "creation_content": { "m.federate": false },
            }),
        )
        .unwrap();
    assert!(reply.ok(), "{}", reply.describe());
    let room = reply.str("room_id").unwrap().to_string();

    let refused = world.bootstrap(&[]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let err = stderr(&refused);
    assert_contains(
        &err,
        format!(
            "error: room `{}` (`{room}`) was made by `@outsider:magi`, not by the appliance's account `@appliance:magi`",
            planned.alias
        ),
    );
    assert_contains(&err, "hint: ");
    // No agent was pulled into it.
    let members = world.get(
        &format!("/_matrix/client/v3/rooms/{}/joined_members", segment(&room)),
        &outsider,
    );
    assert_eq!(
        members.body["joined"].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["@outsider:magi"]
    );
}

/// `appliance admin password` as root on the hub.
fn admin_password(world: &World, admin: &str, prefix: &[&str]) -> Output {
    let program = env!("CARGO_BIN_EXE_appliance");
    let (first, rest) = match prefix.split_first() {
        Some((first, rest)) => (*first, [rest, &[program]].concat()),
        None => (program, Vec::new()),
    };
    Command::new(first)
        .args(rest)
        .args(["admin", "password", admin, "--plan"])
        .arg(plan_path())
        .arg("--state-dir")
        .arg(&world.state)
        .output()
        .unwrap()
}

fn login(world: &World, user: &str, password: &str) -> u16 {
    let body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    });
    world
        .client()
        .post("/_matrix/client/v3/login", None, &body)
        .unwrap()
        .status
}

#[test]
fn the_admin_password_command_prints_a_password_that_logs_in() {
    let Some(venv) = venv() else { return };
    let (world, _synapse) = World::bootstrapped(&venv);

    let output = admin_password(&world, "gendo", &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let password = stdout(&output).trim().to_string();
    assert_eq!(password.len(), 64);
    assert_contains(stderr(&output), "change it");
    // The same with the full user id.
    assert_eq!(stdout(&admin_password(&world, "@gendo:magi", &[])).trim(), password);
    // Stored nowhere in the state directory: derived on demand.
    for entry in walkdir::WalkDir::new(&world.state).into_iter().flatten() {
        if entry.file_type().is_file() {
            let text = fs::read_to_string(entry.path()).unwrap_or_default();
            assert!(
                !text.contains(&password),
                "{} holds the password",
                entry.path().display()
            );
        }
    }
    assert_eq!(login(&world, "gendo", &password), 200);

    // Changing it, as docs/first-conversation.md says: the printed one stops working.
    let reply = world
        .client()
        .post(
            "/_matrix/client/v3/login",
            None,
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "gendo"}, "password": password}),
        )
        .unwrap();
    let token = reply.str("access_token").unwrap().to_string();
    let change = json!({
        "new_password": "a new passphrase for gendo",
        "logout_devices": false,
        "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "gendo"}, "password": password},
    });
    let reply = world
        .client()
        .post("/_matrix/client/v3/account/password", Some(&token), &change)
        .unwrap();
    assert!(reply.ok(), "{}", reply.describe());
    assert_eq!(login(&world, "gendo", &password), 403);
    assert_eq!(login(&world, "gendo", "a new passphrase for gendo"), 200);

    // Refusals: an agent, an unknown name, and anyone but root.
    let agent = admin_password(&world, "melchior", &[]);
    assert!(!agent.status.success());
    assert_contains(stderr(&agent), "is an agent");
    let unknown = admin_password(&world, "shinji", &[]);
    assert_contains(stderr(&unknown), "admins are: gendo");
    if rustix::process::geteuid().is_root() {
        let nobody = admin_password(
            &world,
            "gendo",
            &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
        );
        assert!(!nobody.status.success());
        assert_contains(stderr(&nobody), "only root can read");
        assert!(!stdout(&nobody).contains(&password));
    }
}

/// A room the bootstrap account made and then left (its members and
/// history still there) is not taken for the shell of an interrupted
/// creation: it is refused with a hint, and the alias stays on it.
#[test]
fn a_room_the_appliance_account_left_is_refused_not_replaced() {
    let Some(venv) = venv() else { return };
    let (world, _synapse) = World::bootstrapped(&venv);
    let admin = world.secret(&format!("{}/matrix-token", plan().bootstrap_account.secrets_dir));
    let room = room_id(&world, &admin);
    let reply = crate::support::synapse::room_post(&world.client(), &admin, &room, "leave", &json!({}));
    assert!(reply.ok(), "{}", reply.describe());

    let refused = world.bootstrap(&[]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    let err = stderr(&refused);
    assert_contains(
        &err,
        format!("error: the appliance's account `@appliance:magi` is not in its room `#magi:magi` (`{room}`)\nhint: "),
    );
    assert_eq!(
        room_id(&world, &admin),
        room,
        "the alias was moved off a room with members"
    );
}

/// An install made on SQLite moves to PostgreSQL with Synapse's own
/// `synapse_port_db`, as docs/bootstrap.md tells ("Moving an existing
/// install"): Synapse on PostgreSQL then has the same accounts, tokens,
/// devices and room, and a bootstrap rerun changes nothing.
#[test]
fn an_sqlite_install_moves_to_postgresql_with_synapse_port_db() {
    let Some(venv) = venv() else { return };
    let world = World::new();
    assert_ok(&world.bootstrap(&["--secrets-only"]));
    let on_postgres = crate::support::synapse::settings(&world.data, &world.state, world.port);
    assert_eq!(on_postgres["database"]["name"], "psycopg2", "the default is PostgreSQL");
    let mut on_sqlite = on_postgres.clone();
    let sqlite = world.data.join("homeserver.db");
    on_sqlite["database"] = json!({ "name": "sqlite3", "args": { "database": sqlite } });
    // Synapse paces its background updates with a sleep between batches
    // (minutes on a fresh database); the operator waits them out, the test
    // lets them run back to back.
    on_sqlite["background_updates"] = json!({ "sleep_enabled": false });

    // The old install: bootstrapped on SQLite.
    let mut synapse = Synapse::spawn(&venv, &world.data, &on_sqlite, &world.url, &[]);
    synapse.wait_ready();
    assert_ok(&world.bootstrap(&[]));
    let devices = world.devices();
    // `synapse_port_db` refuses a database with background updates still
    // to run: Synapse runs them itself, a fresh one within seconds.
    let started = Instant::now();
    while sqlite_rows(&venv, &sqlite, "SELECT count(*) FROM background_updates") != "0" {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "Synapse's background updates did not finish:\n{}",
            sqlite_rows(&venv, &sqlite, "SELECT update_name FROM background_updates")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("background updates done after {:.1} s", started.elapsed().as_secs_f64());
    drop(synapse);
    assert!(
        !world.data.join("postgres").exists(),
        "the SQLite install had a PostgreSQL"
    );

    // Synapse stopped; its data copied into the empty database NixOS makes.
    let postgres = Postgres::start(&world.data.join("postgres"));
    let mut target = on_postgres.clone();
    target["database"]["args"]["host"] = json!(postgres.socket_dir);
    let config = world.data.join("postgres-target.yaml");
    fs::write(&config, serde_json::to_string_pretty(&target).unwrap()).unwrap();
    let port = Command::new(venv.join("bin/synapse_port_db"))
        .arg("--sqlite-database")
        .arg(&sqlite)
        .arg("--postgres-config")
        .arg(&config)
        .current_dir(&world.data)
        .output()
        .unwrap();
    assert!(
        port.status.success(),
        "synapse_port_db failed:\n{}{}",
        stdout(&port),
        stderr(&port)
    );
    let accounts = "SELECT name FROM users ORDER BY name";
    let in_sqlite = sqlite_rows(&venv, &sqlite, accounts);
    assert_contains(&in_sqlite, &plan().bootstrap_account.user_id);
    assert_eq!(postgres.query(POSTGRES_NAME, accounts), in_sqlite);
    assert_eq!(
        postgres.query(
            "postgres",
            &format!("SELECT datcollate, datctype FROM pg_database WHERE datname = '{POSTGRES_NAME}'")
        ),
        "C|C",
        "Synapse needs C collation"
    );
    drop(postgres);

    // Synapse on PostgreSQL (the same cluster, restarted), SQLite gone.
    fs::rename(&sqlite, world.data.join("homeserver.db.ported")).unwrap();
    let mut synapse = Synapse::spawn(&venv, &world.data, &on_postgres, &world.url, &[]);
    synapse.wait_ready();
    assert_eq!(synapse.postgres().unwrap().query(POSTGRES_NAME, accounts), in_sqlite);
    assert_eq!(world.devices(), devices, "devices changed in the move");
    assert_settled(&world);
}

/// Rows of `sql` in an SQLite database, as psql's `-tA` prints them.
fn sqlite_rows(venv: &Path, db: &Path, sql: &str) -> String {
    let script = "import sqlite3, sys\nfor row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]):\n    print('|'.join(map(str, row)))";
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}
