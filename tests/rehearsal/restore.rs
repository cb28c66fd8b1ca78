//! Issue 24 items 3 and 5 in the rehearsal: a marker is written into each
//! agent's state volume; the appliance's backup (`appliance backup
//! prepare`, restic, `appliance backup cleanup`, as nixpkgs' restic unit
//! runs them, with the config the generator makes for a `[backup]`
//! section) goes to a local repository with the agents running; the
//! agents' containers, their state volumes and the appliance's secrets are
//! destroyed; `appliance restore` brings them back (the markers with
//! them); the agents start again and answer in the same room with their
//! restored tokens. The admin's password (derived from the restored master
//! key) still logs in.
//!
//! Not proven here: an agent recalling, after the restore, a fact it was
//! told before. Hermes sends each mention to the model without the earlier
//! turns (two messages: its system prompt and the mention), so a fact told
//! in the room comes back only through its own memory tool, which the
//! stand-in does not drive yet (`recall` in tests/rehearsal/README.md).
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

pub fn restore_brings_back_the_agents_state(hub: &Hub, admin: &Member, agents: &[&str]) {
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
    let markers = write_markers(&config);
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
    for (path, content) in &markers {
        let back = fs::read_to_string(path).unwrap_or_else(|e| panic!("{} after the restore: {e}", path.display()));
        assert_eq!(&back, content, "{} came back changed", path.display());
    }
    eprintln!("rehearsal: the markers of {} state volume(s) came back", markers.len());
    for agent in agents {
        let body = answers_again(hub, admin, agent, crate::matrix::FIRST_ANSWER);
        eprintln!("rehearsal: after the restore, {agent} answered: {body}");
    }
    // The admin's password is derived from the restored master key.
    let room = format!("#magi:{}", hub.appliance.matrix.server_name);
    let again = Member::login(hub, "gendo", &room);
    eprintln!(
        "rehearsal: the admin logged in again after the restore ({})",
        again.room_id
    );
}
