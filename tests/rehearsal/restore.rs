//! Issue 24 items 3 and 5 in the rehearsal: each agent is told a fact
//! (Hermes stores it with its `memory` tool, in MEMORY.md on its state
//! volume) and a marker is written into each agent's state volume; the
//! appliance's backup (`appliance backup prepare`, restic, `appliance
//! backup cleanup`, as nixpkgs' restic unit runs them, with the config the
//! generator makes for a `[backup]` section) goes to a local repository
//! with the agents and Synapse running, Synapse's database dumped with
//! `pg_dump`; the agents' containers, their state volumes and the
//! appliance's secrets are destroyed, Synapse is stopped and its database
//! dropped; `appliance restore` brings them back (the markers and the
//! database with them); Synapse and the agents start again, the agents
//! answer in the same room with their restored tokens and recall the fact
//! (Hermes from its system prompt, where it puts MEMORY.md; OpenClaw and
//! PicoClaw, offered no `memory` tool, from the earlier turns of their
//! sessions, kept on their volumes). The
//! admin's old token still works and their password (derived from the
//! restored master key) logs in to the same room.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agent_appliance::generator::model::STATE_DIR;
use agent_appliance::generator::spec::schema::AgentKind;
use agent_appliance::schema::backup::BackupConfig;

use crate::hub::Hub;
use crate::matrix::{Member, agent_id};
use crate::support::synapse::{POSTGRES_NAME, postgres_bin};

fn random_hex() -> String {
    let mut bytes = [0u8; 4];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `backup.json` the generator writes for the hub with a `[backup]`
/// section naming `repository`, re-rooted like every host path here:
/// Synapse's files below its data directory, the state directory below the
/// host root, volumes where the hub's dockerd keeps them, the database on
/// the socket of the rehearsal's PostgreSQL, whose superuser is its server's
/// OS account. No units (there is no systemd here: the test stops what
/// must not run).
fn rehearsal_config(hub: &Hub, dir: &Path, volume_root: &Path) -> BackupConfig {
    use agent_appliance::generator::model::backup::Backup;
    let backup = Backup {
        repository: dir.join("repository").display().to_string(),
        password_file: dir.join("password").display().to_string(),
        environment_file: None,
        schedule: "daily".into(),
        keep_daily: 7,
        keep_weekly: 4,
        keep_monthly: 6,
    };
    let mut config = agent_appliance::generator::render::backup::config(&hub.appliance, hub.hub(), &backup);
    let synapse = hub.host_root.path().join("var/lib/matrix-synapse");
    for item in &mut config.paths {
        item.path = match item.name.as_str() {
            "synapse-media" => synapse.join("media"),
            "synapse-signing-key" => synapse.join("signing.key"),
            _ => hub.host_path(&item.path),
        }
        .display()
        .to_string();
    }
    config.staging_dir = hub.host_path(&config.staging_dir).display().to_string();
    config.status_file = hub.host_path(&config.status_file).display().to_string();
    config.volume_root = volume_root.display().to_string();
    let postgres = hub
        .synapse
        .as_ref()
        .and_then(|s| s.postgres())
        .expect("Synapse runs on PostgreSQL");
    let pg = config
        .postgresql
        .as_mut()
        .expect("the generated backup dumps Synapse's database");
    assert_eq!(pg.database, POSTGRES_NAME);
    pg.socket_dir = postgres.socket_dir.display().to_string();
    (pg.uid, pg.gid) = postgres_server_ids();
    config.units = Vec::new();
    assert!(
        config
            .paths
            .iter()
            .any(|p| p.path.ends_with(&format!("{}/secrets", STATE_DIR))),
        "the backup keeps the appliance's secrets: {:?}",
        config.paths
    );
    config
}

/// The uid and gid the rehearsal's PostgreSQL server runs as: `nobody`
/// when the test is root (tests/support/synapse.rs), else the test's own.
fn postgres_server_ids() -> (u32, u32) {
    if !rustix::process::geteuid().is_root() {
        return (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    }
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "nobody"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// Where the hub's dockerd keeps volume `name`'s data: `<root>/<name>/_data`.
fn volume_root(hub: &Hub, name: &str) -> PathBuf {
    let out = hub
        .daemon
        .docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", name]);
    succeeded("docker volume inspect", &out);
    let mountpoint = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    mountpoint.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// restic on the rehearsal's repository, as the unit's environment sets it.
fn restic(config: &BackupConfig, args: &[&str]) -> Output {
    crate::support::restic(Path::new(&config.repository), Path::new(&config.password_file), args)
}

/// `appliance ARGS` with the hub's dockerd and PostgreSQL's client
/// programs (`pg_dump`, `dropdb`, `createdb`, `pg_restore`) first on PATH.
fn appliance(hub: &Hub, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        postgres_bin().expect("Synapse runs on PostgreSQL").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(args)
        .env("PATH", path)
        .env("DOCKER_HOST", format!("unix://{}", hub.daemon.socket.display()))
        .output()
        .expect("failed to run appliance")
}

/// What nixpkgs' restic unit does once: prepare, back up the staging
/// directory, clean up. The snapshot's id.
fn back_up(hub: &Hub, config: &BackupConfig, config_file: &Path) -> String {
    let file = config_file.display().to_string();
    succeeded("restic init", &restic(config, &["init"]));
    let out = appliance(hub, &["backup", "prepare", "--config", &file]);
    succeeded("appliance backup prepare", &out);
    eprintln!(
        "rehearsal: backup prepare: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    succeeded("restic backup", &restic(config, &["backup", &config.staging_dir]));
    let out = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["backup", "cleanup", "--config", &file])
        .env("SERVICE_RESULT", "success")
        .env("EXIT_STATUS", "0")
        .output()
        .unwrap();
    succeeded("appliance backup cleanup", &out);
    let snapshots: serde_json::Value =
        serde_json::from_slice(&restic(config, &["snapshots", "--json"]).stdout).unwrap();
    snapshots[0]["short_id"].as_str().unwrap().to_string()
}

/// Removes the agents' containers and volumes and the appliance's secrets.
fn destroy(hub: &Hub, agents: &[agent_appliance::generator::model::Sandbox], config: &BackupConfig) {
    let names: Vec<&str> = agents.iter().map(|s| s.name.as_str()).collect();
    succeeded(
        "docker rm -f (the agents)",
        &hub.daemon.docker(&[&["rm", "-f", "-v"][..], &names].concat()),
    );
    for volume in &config.volumes {
        succeeded("docker volume rm", &hub.daemon.docker(&["volume", "rm", &volume.name]));
    }
    let secrets = hub.state_dir().join("secrets");
    fs::remove_dir_all(&secrets).unwrap();
    eprintln!(
        "rehearsal: destroyed {} and their volumes ({}) and {}",
        names.join(", "),
        config
            .volumes
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        secrets.display()
    );
}

/// Synapse stopped and its database dropped (PostgreSQL keeps running,
/// as `systemctl stop matrix-synapse` leaves it).
fn destroy_database(hub: &mut Hub) {
    let synapse = hub.synapse.as_mut().expect("Synapse runs");
    synapse.stop_homeserver();
    let postgres = synapse.postgres().expect("Synapse runs on PostgreSQL");
    postgres.query("postgres", &format!("DROP DATABASE \"{POSTGRES_NAME}\""));
    let left = postgres.query(
        "postgres",
        &format!("SELECT count(*) FROM pg_database WHERE datname = '{POSTGRES_NAME}'"),
    );
    assert_eq!(left.trim(), "0", "the database `{POSTGRES_NAME}` is still there");
    eprintln!("rehearsal: stopped Synapse and dropped its database `{POSTGRES_NAME}`");
}

fn is_hermes(hub: &Hub, agent: &str) -> bool {
    hub.appliance
        .agents
        .get(agent)
        .is_some_and(|a| a.kind == AgentKind::Hermes)
}

/// A fact told to each agent before the backup: (agent, word, fact).
/// Hermes must store it with its `memory` tool (the stand-in calls the
/// tool when it is offered); the others' answers are only shown.
fn tell_facts(hub: &Hub, admin: &Member, agents: &[&str]) -> Vec<(String, String, String)> {
    agents
        .iter()
        .map(|agent| {
            let (word, fact) = (format!("word-{}", random_hex()), format!("fact-{}", random_hex()));
            let (body, seconds) = crate::matrix::ask(
                hub,
                admin,
                agent,
                &format!("remember {word} is {fact} tag-told{}", random_hex()),
                "[stand-in]",
                Duration::from_secs(180),
            );
            eprintln!("rehearsal: {agent} was told {word} is {fact} ({seconds:.1} s): {body}");
            if is_hermes(hub, agent) {
                assert!(
                    body.contains(&format!("stored {word} is {fact} in its memory"))
                        && body.contains("\"success\": true"),
                    "{agent} did not store the fact with its memory tool: {body}\n{}",
                    hub.all_reports()
                );
            }
            (agent.to_string(), word, fact)
        })
        .collect()
}

/// Each agent asked for its fact after the restore: what is wrong, one
/// line an agent (empty: all recalled it). Hermes must find it in its
/// system prompt (its restored MEMORY.md); the others anywhere in what
/// they sent.
fn recall_facts(hub: &Hub, admin: &Member, facts: &[(String, String, String)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (agent, word, fact) in facts {
        let user = agent_id(hub, agent);
        let event = admin.mention(hub, &user, &format!("recall {word} tag-asked{}", random_hex()));
        let answer = admin
            .wait_reply(hub, &event, &user, "[stand-in]", Duration::from_secs(180))
            .map(|(body, _)| body);
        eprintln!("rehearsal: after the restore, {agent} asked for {word}: {answer:?}");
        let want = if is_hermes(hub, agent) {
            format!("recalls {word} is {fact} (from its system prompt)")
        } else {
            // OpenClaw and PicoClaw are offered no memory tool: the fact
            // comes back in the session history restored with their volumes.
            format!("recalls {word} is {fact} (from earlier turns)")
        };
        if !answer.as_deref().is_some_and(|body| body.contains(&want)) {
            wrong.push(format!("{agent}: wanted `{want}`, got {answer:?}"));
        }
    }
    wrong
}

/// A marker in each of the agents' state volumes, as root beside the
/// agent's own files: (its path below the volume root, its content).
fn write_markers(config: &BackupConfig) -> Vec<(PathBuf, String)> {
    config
        .volumes
        .iter()
        .map(|volume| {
            let path = Path::new(&config.volume_root)
                .join(&volume.name)
                .join("_data/appliance-rehearsal-marker");
            let content = format!("{} before the backup {}", volume.agent, random_hex());
            fs::write(&path, &content).unwrap();
            (path, content)
        })
        .collect()
}

/// Mentions the agent until it answers (it is starting again), within
/// `within`: its restored token works.
fn answers_again(hub: &Hub, admin: &Member, agent: &str, within: Duration) -> String {
    let started = Instant::now();
    let user = crate::matrix::agent_id(hub, agent);
    while started.elapsed() < within {
        let event = admin.mention(
            hub,
            &user,
            &format!("hello after the restore tag-after{}", random_hex()),
        );
        if let Some((body, _)) = admin.wait_reply(hub, &event, &user, "[stand-in]", Duration::from_secs(30)) {
            return body;
        }
    }
    panic!(
        "{agent} did not answer within {} s of the restore\n{}",
        within.as_secs(),
        hub.all_reports()
    );
}

pub fn restore_brings_back_the_agents_state(hub: &mut Hub, admin: &Member, agents: &[&str]) {
    let sandboxes: Vec<_> = hub.sandboxes().into_iter().filter(|s| !s.is_service()).collect();
    let dir = hub.host_root.path().join("backup");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("password"), random_hex() + &random_hex()).unwrap();
    let first_volume = sandboxes
        .iter()
        .flat_map(|s| &s.volumes)
        .next()
        .expect("the agents have state volumes");
    let config = rehearsal_config(hub, &dir, &volume_root(hub, &first_volume.name));
    let config_file = dir.join("backup.json");
    fs::write(&config_file, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let facts = tell_facts(hub, admin, agents);
    let markers = write_markers(&config);
    let snapshot = back_up(hub, &config, &config_file);
    eprintln!("rehearsal: backup snapshot {snapshot} made with the agents and Synapse running");

    destroy(hub, &sandboxes, &config);
    destroy_database(hub);
    let out = appliance(
        hub,
        &["restore", &snapshot, "--config", &config_file.display().to_string()],
    );
    succeeded("appliance restore", &out);
    let said = String::from_utf8_lossy(&out.stderr);
    eprintln!("rehearsal: appliance restore:\n{}", said.trim());
    for volume in &config.volumes {
        assert!(
            said.contains(&format!(
                "volume `{}` (agent `{}`): restored",
                volume.name, volume.agent
            )),
            "restore did not say it restored {}:\n{said}",
            volume.name
        );
    }
    assert!(
        said.contains(&format!("database `{POSTGRES_NAME}`: restored into a fresh database")),
        "restore did not say it restored the database:\n{said}"
    );
    hub.synapse.as_mut().expect("Synapse").start_homeserver();
    crate::hub::wait_for_synapse(hub);

    // The agents again, dependencies first, as after a reboot.
    let mut started: Vec<String> = Vec::new();
    while started.len() < sandboxes.len() {
        for sandbox in &sandboxes {
            if started.contains(&sandbox.name)
                || !sandbox
                    .depends_on
                    .iter()
                    .all(|d| started.contains(d) || hub.is_running(d))
            {
                continue;
            }
            hub.start_sandbox(sandbox);
            started.push(sandbox.name.clone());
        }
    }
    for (path, content) in &markers {
        let back = fs::read_to_string(path).unwrap_or_else(|e| panic!("{} after the restore: {e}", path.display()));
        assert_eq!(&back, content, "{} came back changed", path.display());
    }
    eprintln!("rehearsal: the markers of {} state volume(s) came back", markers.len());
    // The admin's token from before the backup, in the restored database,
    // says these mentions.
    for agent in agents {
        let body = answers_again(hub, admin, agent, crate::matrix::FIRST_ANSWER);
        eprintln!("rehearsal: after the restore, {agent} answered: {body}");
    }
    // The admin's password is derived from the restored master key; the
    // room is the one from before.
    let room = format!("#magi:{}", hub.appliance.matrix.server_name);
    let again = Member::login(hub, "gendo", &room);
    assert_eq!(
        again.room_id, admin.room_id,
        "`{room}` is another room after the restore"
    );
    eprintln!(
        "rehearsal: the admin logged in again after the restore, to the same room ({})",
        again.room_id
    );
    let wrong = recall_facts(hub, admin, &facts);
    assert!(
        wrong.is_empty(),
        "after the restore, not every agent recalled its fact:\n{}\n{}",
        wrong.join("\n"),
        hub.all_reports()
    );
}
