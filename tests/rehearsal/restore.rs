//! Issue 24 items 3 and 5 in the rehearsal: each agent is told a fact; the
//! appliance's backup (`appliance backup prepare`, restic, `appliance
//! backup cleanup`, as nixpkgs' restic unit runs them, with the config the
//! generator makes for a `[backup]` section) goes to a local repository;
//! the agents' containers, their state volumes and the appliance's
//! secrets are destroyed; `appliance restore` brings them back; the agents
//! start again, answer in the same room with their restored tokens, and
//! recall the fact from the conversation they kept. The admin's password
//! (derived from the restored master key) still logs in.
//!
//! Synapse's database is not destroyed here: Synapse keeps running in the
//! rehearsal, and restoring its database under it is what the units list
//! of `backup.json` forbids. Its dump and restore onto a dropped database
//! are proven on a real Synapse and PostgreSQL in tests/backup.rs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agent_appliance::generator::model::STATE_DIR;
use agent_appliance::schema::backup::BackupConfig;

use crate::hub::Hub;
use crate::matrix::Member;

/// What one agent was told before the backup.
struct Fact {
    agent: String,
    word: String,
    fact: String,
}

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

/// Tells each agent a fact and checks it recalls it before the backup: the
/// proof after the restore means something only if the agent sends what it
/// was told before with a later question.
fn tell_facts(hub: &Hub, admin: &Member, agents: &[&str]) -> Vec<Fact> {
    let mut facts = Vec::new();
    for agent in agents {
        let fact = Fact {
            agent: agent.to_string(),
            word: format!("word-{agent}{}", random_hex()),
            fact: format!("fact-{}", random_hex()),
        };
        let told = format!("remember {} is {} tag-told{}", fact.word, fact.fact, random_hex());
        crate::matrix::ask(hub, admin, agent, &told, "[stand-in]", Duration::from_secs(120));
        let asked = format!("recall {} tag-recall{}", fact.word, random_hex());
        let needle = format!("recalls {} is {}", fact.word, fact.fact);
        let (body, _) = crate::matrix::ask(hub, admin, agent, &asked, &needle, Duration::from_secs(120));
        eprintln!("rehearsal: before the backup, {agent}: {body}");
        facts.push(fact);
    }
    facts
}

/// The `backup.json` the generator writes for the hub with a `[backup]`
/// section naming `repository`, re-rooted like every host path here:
/// Synapse's files below its data directory, the state directory below the
/// host root, volumes where the hub's dockerd keeps them. No units (there
/// is no systemd here: the test stops what must not run) and no database
/// (see the module's comment).
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
    config.postgresql = None;
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
    Command::new("restic")
        .args(args)
        .env("RESTIC_REPOSITORY", &config.repository)
        .env("RESTIC_PASSWORD_FILE", &config.password_file)
        .output()
        .expect("failed to run restic")
}

fn appliance(hub: &Hub, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(args)
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

/// Mentions the agent until it answers the recall question with its fact
/// (it is starting again), within `within`.
fn recalls(hub: &Hub, admin: &Member, fact: &Fact, within: Duration) -> String {
    let started = Instant::now();
    let needle = format!("recalls {} is {}", fact.word, fact.fact);
    let user = crate::matrix::agent_id(hub, &fact.agent);
    while started.elapsed() < within {
        let event = admin.mention(hub, &user, &format!("recall {} tag-after{}", fact.word, random_hex()));
        if let Some((body, _)) = admin.wait_reply(hub, &event, &user, "[stand-in]", Duration::from_secs(30)) {
            assert!(
                body.contains(&needle),
                "{} answered after the restore but did not recall {}: {body}",
                fact.agent,
                fact.word
            );
            return body;
        }
    }
    panic!(
        "{} did not answer within {} s of the restore\n{}",
        fact.agent,
        within.as_secs(),
        hub.all_reports()
    );
}

pub fn restore_brings_back_what_agents_were_told(hub: &Hub, admin: &Member, agents: &[&str]) {
    let facts = tell_facts(hub, admin, agents);
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
    let snapshot = back_up(hub, &config, &config_file);
    eprintln!("rehearsal: backup snapshot {snapshot} made with the agents running");

    destroy(hub, &sandboxes, &config);
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
    for fact in &facts {
        let body = recalls(hub, admin, fact, crate::matrix::FIRST_ANSWER);
        eprintln!("rehearsal: after the restore, {}: {body}", fact.agent);
    }
    // The admin's password is derived from the restored master key.
    let room = format!("#magi:{}", hub.appliance.matrix.server_name);
    let again = Member::login(hub, "gendo", &room);
    eprintln!(
        "rehearsal: the admin logged in again after the restore ({})",
        again.room_id
    );
}
