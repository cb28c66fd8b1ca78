//! Backup and restore with the real tools (docs/backup.md): a real
//! PostgreSQL (Debian's, a cluster of the test's own with a socket
//! directory, as tests/support/synapse.rs starts it for Synapse) and a real restic
//! with a local repository in a temp dir.
//!
//! What nixpkgs' restic unit would run is run here by hand, in its order:
//! `appliance backup prepare` (`backupPrepareCommand`), `restic backup` of
//! the staging directory (`ExecStart`, with `RESTIC_REPOSITORY` and
//! `RESTIC_PASSWORD_FILE` as the unit sets them), `appliance backup cleanup`
//! with `SERVICE_RESULT` (`backupCleanupCommand`, run as `ExecStopPost`).
//! No systemd unit runs here, and no Docker: the agents' volumes are
//! directories under a volume root the config names (Docker's local driver
//! keeps `<root>/<name>/_data` the same way).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::support::synapse::{POSTGRES_NAME, Postgres, postgres_bin};
use crate::support::{appliance, backup_config, require_tool, stderr, stdout};

const VOLUME: &str = "appliance-casper-state";
/// Owner of the agent's files in its volume (Hermes' uid), kept by the
/// round trip when the test runs as root.
const AGENT_ID: u32 = 10000;

struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
    pg_bin: PathBuf,
}

impl Fixture {
    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `appliance ARGS` with PostgreSQL's client programs first on PATH.
    fn appliance(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.pg_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = appliance();
        command.args(args).env("PATH", path);
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().expect("failed to run appliance")
    }

    /// `appliance backup cleanup`, as the unit's ExecStopPost runs it with
    /// systemd's `SERVICE_RESULT` (and `EXIT_STATUS`) in `env`; it must
    /// succeed whatever the run's result.
    fn cleanup(&self, env: &[(&str, &str)]) {
        let out = self.appliance(&["backup", "cleanup", "--config", &self.config_arg()], env);
        succeeded(&out, "appliance backup cleanup");
    }

    fn config_arg(&self) -> String {
        self.config.display().to_string()
    }

    /// restic on the fixture's repository, as the unit's environment sets it.
    fn restic(&self, args: &[&str]) -> Output {
        crate::support::restic(&self.path("repo"), &self.path("password"), args)
    }
}

fn succeeded(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}{}", stdout(out), stderr(out));
}

/// The uid and gid of `user` (`id`).
fn ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, user]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// The state of a Matrix host in the temp dir: an agent's volume with its
/// SQLite memory and files, Synapse's media and signing key, the
/// appliance's secrets, and the config naming them.
fn state(postgres: &Postgres) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path();
    let pg_bin = postgres_bin().unwrap();
    let data = host.join("volumes").join(VOLUME).join("_data");
    fs::create_dir_all(&data).unwrap();
    let db = Connection::open(data.join("state.db")).unwrap();
    db.pragma_update(None, "journal_mode", "wal").unwrap();
    db.execute_batch(
        "CREATE TABLE memory (fact TEXT);
         INSERT INTO memory VALUES ('the reactor key is under the third stone');
         CREATE TABLE pairs (batch INTEGER, half INTEGER);",
    )
    .unwrap();
    drop(db);
    write(&data.join("MEMORY.md"), "Gendo prefers tea.\n", 0o600);
    write(&data.join("sessions/s1.jsonl"), "{\"role\":\"user\"}\n", 0o640);
    std::os::unix::fs::symlink("MEMORY.md", data.join("memory-link")).unwrap();
    write(&host.join("secrets/_host/bootstrap/master-key"), "master\n", 0o400);
    write(&host.join("secrets/casper/env"), "MATRIX_ACCESS_TOKEN=syt_x\n", 0o400);
    fs::set_permissions(host.join("secrets/_host"), fs::Permissions::from_mode(0o700)).unwrap();
    write(&host.join("synapse/media_store/local_content/ab/cd/efgh"), "png", 0o600);
    write(
        &host.join("synapse/homeserver.signing.key"),
        "ed25519 a_key xyz\n",
        0o600,
    );
    if running_as_root() {
        for entry in walkdir::WalkDir::new(&data) {
            let path = entry.unwrap().into_path();
            std::os::unix::fs::lchown(&path, Some(AGENT_ID), Some(AGENT_ID)).unwrap();
        }
    }
    write(&host.join("password"), "correct horse battery staple\n", 0o600);

    // The server's superuser account: `nobody` when the test is root
    // (tests/support/synapse.rs runs the server so), the test's own user otherwise.
    let (uid, gid) = if running_as_root() {
        ids("nobody")
    } else {
        (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
    };
    let at = |relative: &str| host.join(relative).display().to_string();
    // No systemd here: no units to find running.
    let mut config = backup_config(host);
    config["volumes"] = json!([
        { "name": VOLUME, "agent": "casper" },
        { "name": "appliance-never-ran-state", "agent": "never-ran" },
    ]);
    config["postgresql"] = json!({
        "database": POSTGRES_NAME, "owner": POSTGRES_NAME,
        "socket_dir": postgres.socket_dir.display().to_string(),
        "superuser": "postgres", "uid": uid, "gid": gid,
    });
    config["paths"] = json!([
        { "name": "synapse-media", "path": at("synapse/media_store"), "what": "Synapse's media store" },
        { "name": "synapse-signing-key", "path": at("synapse/homeserver.signing.key"), "what": "Synapse's signing key" },
        { "name": "appliance-secrets", "path": at("secrets"), "what": "the appliance's secrets" },
    ]);
    let path = host.join("backup.json");
    fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    Fixture {
        dir,
        config: path,
        pg_bin,
    }
}

/// Rows written two at a time, one transaction each, by another connection
/// for as long as `running`: a copy that is not one consistent state shows
/// a batch with one half.
fn writer(database: PathBuf, running: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut db = Connection::open(database).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        let mut batch = 0;
        while running.load(Ordering::Relaxed) {
            let tx = db.transaction().unwrap();
            tx.execute("INSERT INTO pairs VALUES (?1, 1)", [batch]).unwrap();
            tx.execute("INSERT INTO pairs VALUES (?1, 2)", [batch]).unwrap();
            tx.commit().unwrap();
            batch += 1;
        }
        batch
    })
}

#[test]
fn a_backup_restores_volumes_database_media_and_secrets_after_everything_is_wiped() {
    let Some(_) = require_tool("restic", "backups; Debian package `restic`") else {
        return;
    };
    let Some(_) = postgres_bin() else { return };
    let pg_dir = tempfile::tempdir().unwrap();
    let postgres = Postgres::start(&pg_dir.path().join("postgres"));
    postgres.query(
        POSTGRES_NAME,
        &format!(
            "SET ROLE \"{POSTGRES_NAME}\"; CREATE TABLE rooms (id TEXT); INSERT INTO rooms VALUES ('!magi:magi'), ('!ops:magi');"
        ),
    );
    let f = state(&postgres);
    let config = f.config_arg();
    // What the unit's `initialize = true` does first.
    succeeded(&f.restic(&["init"]), "restic init");

    // prepare, while the agent writes to its memory.
    let running = Arc::new(AtomicBool::new(true));
    let volume_db = f.path("volumes").join(VOLUME).join("_data/state.db");
    let writing = writer(volume_db.clone(), running.clone());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = f.appliance(&["backup", "prepare", "--config", &config], &[]);
    running.store(false, Ordering::Relaxed);
    let batches = writing.join().unwrap();
    succeeded(&out, "appliance backup prepare");
    assert!(batches > 0, "the writer wrote nothing");
    assert!(stderr(&out).contains("absent, skipped"), "{}", stderr(&out));
    let staging = f.path("backup/staging");
    assert_eq!(mode(&staging), 0o700);

    // The unit's ExecStart, then its ExecStopPost.
    let out = f.restic(&["backup", "--json", &staging.display().to_string()]);
    succeeded(&out, "restic backup");
    f.cleanup(&[("SERVICE_RESULT", "success"), ("EXIT_STATUS", "0")]);
    assert!(
        !staging.exists(),
        "cleanup left the staging directory (every secret in clear)"
    );
    let status: Value = serde_json::from_str(&fs::read_to_string(f.path("backup/status.json")).unwrap()).unwrap();
    assert_eq!(status["ok"], true, "{status}");

    // `backup list` shows the snapshot restic made.
    let snapshots: Value = serde_json::from_slice(&f.restic(&["snapshots", "--json"]).stdout).unwrap();
    let id = snapshots[0]["short_id"].as_str().unwrap().to_string();
    let out = f.appliance(&["backup", "list", "--config", &config], &[]);
    succeeded(&out, "appliance backup list");
    assert!(stdout(&out).starts_with("ID"), "{}", stdout(&out));
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));

    // After the backup: a room the restore must forget; then everything wiped.
    postgres.query(POSTGRES_NAME, "INSERT INTO rooms VALUES ('!after:magi')");
    for wiped in ["volumes", "secrets", "synapse"] {
        fs::remove_dir_all(f.path(wiped)).unwrap();
    }
    postgres.query("postgres", &format!("DROP DATABASE \"{POSTGRES_NAME}\""));

    // No Docker here: the volume root is a directory of the test's.
    let out = f.appliance(&["restore", &id, "--config", &config, "--without-docker"], &[]);
    succeeded(&out, "appliance restore");
    let said = stderr(&out);
    for line in [
        "volume `appliance-casper-state` (agent `casper`): restored",
        "database `matrix-synapse`: restored",
        "the appliance's secrets: restored",
    ] {
        assert!(said.contains(line), "restore did not say {line:?}:\n{said}");
    }

    // The agent's memory: its fact, and only whole transactions.
    let db = Connection::open(&volume_db).unwrap();
    let fact: String = db.query_row("SELECT fact FROM memory", [], |r| r.get(0)).unwrap();
    assert_eq!(fact, "the reactor key is under the third stone");
    let halves: u32 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT batch FROM pairs GROUP BY batch HAVING COUNT(*) != 2)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(halves, 0, "the copy holds half a transaction");
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    let data = f.path("volumes").join(VOLUME).join("_data");
    assert_eq!(
        fs::read_to_string(data.join("MEMORY.md")).unwrap(),
        "Gendo prefers tea.\n"
    );
    assert_eq!(mode(&data.join("MEMORY.md")), 0o600);
    assert_eq!(mode(&data.join("sessions/s1.jsonl")), 0o640);
    assert_eq!(fs::read_link(data.join("memory-link")).unwrap(), Path::new("MEMORY.md"));
    if running_as_root() {
        for file in ["MEMORY.md", "sessions/s1.jsonl", "state.db"] {
            let meta = fs::metadata(data.join(file)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (AGENT_ID, AGENT_ID), "{file}");
        }
    }
    assert!(!f.path("volumes/appliance-never-ran-state").exists());

    // Secrets, media and key, with their modes.
    assert_eq!(
        fs::read_to_string(f.path("secrets/_host/bootstrap/master-key")).unwrap(),
        "master\n"
    );
    assert_eq!(mode(&f.path("secrets/_host/bootstrap/master-key")), 0o400);
    assert_eq!(mode(&f.path("secrets/_host")), 0o700);
    assert_eq!(mode(&f.path("secrets/casper/env")), 0o400);
    assert_eq!(
        fs::read_to_string(f.path("synapse/media_store/local_content/ab/cd/efgh")).unwrap(),
        "png"
    );
    assert_eq!(
        fs::read_to_string(f.path("synapse/homeserver.signing.key")).unwrap(),
        "ed25519 a_key xyz\n"
    );
    assert_eq!(mode(&f.path("synapse/homeserver.signing.key")), 0o600);

    // The database as it was at the backup, owned by Synapse's role.
    assert_eq!(
        postgres.query(POSTGRES_NAME, "SELECT id FROM rooms ORDER BY id"),
        "!magi:magi\n!ops:magi"
    );
    assert_eq!(
        postgres.query(
            POSTGRES_NAME,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'rooms'"
        ),
        POSTGRES_NAME
    );
    assert_eq!(
        postgres.query(
            "postgres",
            &format!("SELECT datcollate FROM pg_database WHERE datname = '{POSTGRES_NAME}'")
        ),
        "C"
    );
    assert!(!staging.exists(), "restore left the staging directory");

    check_passes_then_fails_on_a_corrupted_pack(&f);
}

/// `backup check` on the good repository, then with one data pack's bytes
/// changed (same size): `--read-data` finds it.
fn check_passes_then_fails_on_a_corrupted_pack(f: &Fixture) {
    let config = f.config_arg();
    succeeded(
        &f.appliance(&["backup", "check", "--config", &config], &[]),
        "appliance backup check",
    );
    succeeded(
        &f.appliance(&["backup", "check", "--read-data", "--config", &config], &[]),
        "appliance backup check --read-data",
    );
    let pack = walkdir::WalkDir::new(f.path("repo/data"))
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .find(|e| e.file_type().is_file())
        .expect("the repository has a data pack")
        .into_path();
    let mut bytes = fs::read(&pack).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::set_permissions(&pack, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&pack, bytes).unwrap();
    let out = f.appliance(&["backup", "check", "--read-data", "--config", &config], &[]);
    assert!(
        !out.status.success(),
        "check passed a corrupted pack:\n{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("failed its check"), "{}", stderr(&out));
}

#[test]
fn a_failed_run_is_recorded_as_failed_and_its_staging_removed() {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    fs::create_dir_all(staging.join("paths")).unwrap();
    let config = json!({
        "schema": agent_appliance::schema::backup::CONFIG_SCHEMA,
        "appliance": "magi", "repository": "/nonexistent", "password_file": "/nonexistent",
        "staging_dir": staging.display().to_string(),
        "status_file": dir.path().join("status.json").display().to_string(),
        "unit": "restic-backups-appliance.service", "volume_root": "/nonexistent/volumes",
        "volumes": [], "paths": [], "units": [],
    });
    let path = dir.path().join("backup.json");
    fs::write(&path, config.to_string()).unwrap();
    let out = appliance()
        .args(["backup", "cleanup", "--config", &path.display().to_string()])
        .env("SERVICE_RESULT", "exit-code")
        .env("EXIT_STATUS", "1")
        .output()
        .unwrap();
    succeeded(&out, "appliance backup cleanup");
    assert!(
        stderr(&out).contains("backup failed: exit-code (exit status 1)"),
        "{}",
        stderr(&out)
    );
    assert!(!staging.exists());
    let status: Value = serde_json::from_str(&fs::read_to_string(dir.path().join("status.json")).unwrap()).unwrap();
    assert_eq!(status["ok"], false);
    assert_eq!(status["service_result"], "exit-code");
    assert_eq!(status["exit_status"], "1");
}

/// A busybox image for a private dockerd (no networking, a network
/// namespace of its own), as tests/warden.rs makes one.
fn private_docker(why: &str) -> Option<crate::support::dockerd::Dockerd> {
    crate::support::dockerd::private_busybox(why, &["restic"], BUSYBOX)
}

const BUSYBOX: &str = "appliance-backup-test:busybox";

/// `docker run --rm` of a shell line in busybox, with the agent's volume
/// at `/data`, as the agent's uid; its stdout.
fn in_volume(daemon: &crate::support::dockerd::Dockerd, line: &str) -> String {
    let volume = format!("{VOLUME}:/data");
    let user = format!("{AGENT_ID}:{AGENT_ID}");
    let out = daemon.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        &user,
        "-v",
        &volume,
        BUSYBOX,
        "/bin/busybox",
        "sh",
        "-c",
        line,
    ]);
    succeeded(&out, &format!("docker run `{line}`"));
    stdout(&out)
}

/// With a real dockerd: an agent's named volume, backed up from Docker's
/// local driver's directory and restored, is what the agent's next
/// container mounts, with the agent's ownership, so it can write there
/// again: after the fresh host's first boot made the volume afresh (with
/// the agent's units stopped, as docs/backup.md says), and on a Docker
/// that does not know the volume at all.
#[test]
fn a_restored_docker_volume_is_what_the_next_container_mounts() {
    let Some(daemon) = private_docker("backing up a real Docker volume") else {
        return;
    };
    // The volume's root belongs to the agent, as copy-up from its image
    // makes it on first use.
    succeeded(&daemon.docker(&["volume", "create", VOLUME]), "docker volume create");
    let volume_root = daemon.dir().join("data/volumes");
    std::os::unix::fs::chown(volume_root.join(VOLUME).join("_data"), Some(AGENT_ID), Some(AGENT_ID)).unwrap();
    in_volume(
        &daemon,
        "echo 'the meeting moved to Thursday' > /data/fact && mkdir /data/sessions",
    );

    let dir = tempfile::tempdir().unwrap();
    let at = |relative: &str| dir.path().join(relative).display().to_string();
    write(&dir.path().join("password"), "correct horse battery staple\n", 0o600);
    let config = json!({
        "schema": agent_appliance::schema::backup::CONFIG_SCHEMA,
        "appliance": "magi", "repository": at("repo"), "password_file": at("password"),
        "staging_dir": at("staging"), "status_file": at("status.json"),
        "unit": "restic-backups-appliance.service",
        "volume_root": volume_root.display().to_string(),
        "volumes": [{ "name": VOLUME, "agent": "casper" }],
        "paths": [], "units": [],
    });
    let config_path = dir.path().join("backup.json");
    fs::write(&config_path, config.to_string()).unwrap();
    let f = Fixture {
        dir,
        config: config_path,
        pg_bin: PathBuf::from("/nonexistent"),
    };
    let config = f.config_arg();
    succeeded(&f.restic(&["init"]), "restic init");
    succeeded(
        &f.appliance(&["backup", "prepare", "--config", &config], &[]),
        "appliance backup prepare",
    );
    succeeded(
        &f.restic(&["backup", &f.path("staging").display().to_string()]),
        "restic backup",
    );
    f.cleanup(&[("SERVICE_RESULT", "success")]);

    // The fresh host: the volume gone, then made afresh by the first boot.
    succeeded(&daemon.docker(&["volume", "rm", VOLUME]), "docker volume rm");
    succeeded(&daemon.docker(&["volume", "create", VOLUME]), "docker volume create");
    std::os::unix::fs::chown(volume_root.join(VOLUME).join("_data"), Some(AGENT_ID), Some(AGENT_ID)).unwrap();
    in_volume(&daemon, "echo 'nothing yet' > /data/fact");

    let docker_host = format!("unix://{}", daemon.socket.display());
    let restore = || {
        let out = f.appliance(
            &[
                "restore",
                "latest",
                "--config",
                &config,
                "--docker",
                crate::support::dockerd::DOCKER,
            ],
            &[("DOCKER_HOST", &docker_host)],
        );
        succeeded(&out, "appliance restore");
    };
    restore();
    assert_eq!(in_volume(&daemon, "cat /data/fact"), "the meeting moved to Thursday\n");
    // Still the agent's: it writes there again.
    in_volume(&daemon, "echo more >> /data/fact && touch /data/sessions/new");

    // A host whose Docker does not know the volume at all: restore
    // registers it first, so Docker's first use does not take it over.
    succeeded(&daemon.docker(&["volume", "rm", VOLUME]), "docker volume rm");
    restore();
    assert_eq!(
        in_volume(&daemon, "stat -c '%u %a' /data; cat /data/fact"),
        format!("{AGENT_ID} 755\nthe meeting moved to Thursday\n")
    );
    in_volume(&daemon, "touch /data/again");
    let inspect = daemon.docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", VOLUME]);
    assert_eq!(
        stdout(&inspect).trim(),
        volume_root.join(VOLUME).join("_data").display().to_string()
    );
}

/// A Matrix host as systemd starts it, on `port`: secrets, Synapse (on
/// its PostgreSQL in `data/postgres`), bootstrap.
fn matrix_host(venv: &Path, data: &Path, state: &Path, port: u16) -> crate::support::synapse::Synapse {
    let url = format!("http://127.0.0.1:{port}");
    let bootstrap = |extra: &[&str]| {
        let out = appliance()
            .arg("bootstrap")
            .arg("--plan")
            .arg(crate::support::root().join("generated/bootstrap/plan.json"))
            .arg("--state-dir")
            .arg(state)
            .args(["--homeserver", &url])
            .args(extra)
            .output()
            .unwrap();
        succeeded(&out, "appliance bootstrap");
    };
    bootstrap(&["--secrets-only"]);
    let mut synapse = crate::support::synapse::Synapse::start(venv, data, state, port);
    synapse.wait_ready();
    bootstrap(&[]);
    synapse
}

/// Restore of a whole Matrix host onto a fresh one (docs/backup.md,
/// "Restoring onto a fresh host"), with a real Synapse on PostgreSQL and
/// the real bootstrap: the fresh host's first boot makes new secrets and
/// accounts; once it is stopped and the snapshot restored, the admin logs
/// in with the password of the old master key, the agent's old token works
/// and is the one in its secrets, the room is the same room with what was
/// said in it before the backup, and the bootstrap's rerun (every boot)
/// changes nothing. The agents themselves (their memory after a restore)
/// are the rehearsal's to prove, not this test's.
#[test]
fn a_restored_matrix_host_keeps_its_rooms_tokens_and_passwords() {
    use agent_appliance::on_host::bootstrap::accounts::password;
    use agent_appliance::on_host::bootstrap::client::{Client, segment};
    let Some(venv) = crate::support::synapse::venv() else {
        return;
    };
    let Some(_) = require_tool("restic", "backups; Debian package `restic`") else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let (data, state) = (temp.path().join("synapse"), temp.path().join("state"));
    let port = crate::support::ports::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let client = Client::new(
        &url,
        std::time::Instant::now() + std::time::Duration::from_secs(120),
        std::time::Duration::from_secs(30),
    );
    let secret = |relative: &str| fs::read_to_string(state.join(relative)).unwrap().trim().to_string();
    let login = |master_key: &str| {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": "gendo" },
            "password": password(master_key, "@gendo:magi"),
        });
        client.post("/_matrix/client/v3/login", None, &body).unwrap()
    };
    let room_id = |token: &str| {
        let reply = client
            .get(
                &format!("/_matrix/client/v3/directory/room/{}", segment("#magi:magi")),
                Some(token),
            )
            .unwrap();
        reply.str("room_id").unwrap().to_string()
    };
    let whoami = |token: &str| client.get("/_matrix/client/v3/account/whoami", Some(token)).unwrap();

    // The old host: the admin tells the room a fact.
    let synapse = matrix_host(&venv, &data, &state, port);
    let master_key = secret("secrets/_host/bootstrap/master-key");
    let admin = login(&master_key);
    assert!(admin.ok(), "{}", admin.describe());
    let admin = admin.str("access_token").unwrap().to_string();
    let room = room_id(&admin);
    let join = crate::support::synapse::room_post(&client, &admin, &room, "join", &json!({}));
    assert!(join.ok(), "{}", join.describe());
    let fact = "remember: the launch code is 0451";
    let sent = client
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/fact1", segment(&room)),
            Some(&admin),
            &json!({ "msgtype": "m.text", "body": fact }),
        )
        .unwrap();
    assert!(sent.ok(), "{}", sent.describe());
    let melchior = secret("secrets/melchior/matrix-token");

    // Its backup: everything but the agents' volumes (no agent runs here).
    let (uid, gid) = if running_as_root() {
        ids("nobody")
    } else {
        (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
    };
    let socket_dir = synapse.postgres().unwrap().socket_dir.display().to_string();
    let at = |path: &Path| path.display().to_string();
    let config = json!({
        "schema": agent_appliance::schema::backup::CONFIG_SCHEMA,
        "appliance": "magi",
        "repository": at(&temp.path().join("repo")),
        "password_file": at(&temp.path().join("password")),
        "staging_dir": at(&temp.path().join("staging")),
        "status_file": at(&temp.path().join("status.json")),
        "unit": "restic-backups-appliance.service",
        "volume_root": at(&temp.path().join("volumes")),
        "volumes": [],
        "postgresql": {
            "database": POSTGRES_NAME, "owner": POSTGRES_NAME, "socket_dir": socket_dir,
            "superuser": "postgres", "uid": uid, "gid": gid,
        },
        "paths": [
            { "name": "synapse-media", "path": at(&data.join("media")), "what": "Synapse's media store" },
            { "name": "synapse-signing-key", "path": at(&data.join("signing.key")), "what": "Synapse's signing key" },
            { "name": "appliance-secrets", "path": at(&state.join("secrets")), "what": "the appliance's secrets" },
            { "name": "warden", "path": at(&state.join("warden")), "what": "the warden's state" },
        ],
        "units": [],
    });
    let f = Fixture {
        config: temp.path().join("backup.json"),
        pg_bin: postgres_bin().unwrap(),
        dir: tempfile::tempdir().unwrap(),
    };
    fs::write(&f.config, config.to_string()).unwrap();
    write(&temp.path().join("password"), "correct horse battery staple\n", 0o600);
    let restic = |args: &[&str]| {
        let out = crate::support::restic(&temp.path().join("repo"), &temp.path().join("password"), args);
        succeeded(&out, &format!("restic {args:?}"));
    };
    let config_arg = f.config_arg();
    restic(&["init"]);
    succeeded(
        &f.appliance(&["backup", "prepare", "--config", &config_arg], &[]),
        "appliance backup prepare",
    );
    restic(&["backup", &at(&temp.path().join("staging"))]);
    f.cleanup(&[("SERVICE_RESULT", "success")]);
    drop(synapse);

    // The fresh host: nothing of the old one; its first boot makes its own.
    fs::remove_dir_all(&data).unwrap();
    fs::remove_dir_all(&state).unwrap();
    let synapse = matrix_host(&venv, &data, &state, port);
    assert_ne!(secret("secrets/_host/bootstrap/master-key"), master_key);
    assert_ne!(secret("secrets/melchior/matrix-token"), melchior);
    drop(synapse);
    // Stopped, but for its database; then the restore, then a boot.
    let postgres = Postgres::start(&data.join("postgres"));
    let out = f.appliance(&["restore", "latest", "--config", &config_arg, "--without-docker"], &[]);
    succeeded(&out, "appliance restore");
    drop(postgres);
    let _synapse = matrix_host(&venv, &data, &state, port);

    assert_eq!(secret("secrets/_host/bootstrap/master-key"), master_key);
    assert_eq!(
        secret("secrets/melchior/matrix-token"),
        melchior,
        "the bootstrap's rerun changed the agent's token"
    );
    let me = whoami(&melchior);
    assert!(me.ok(), "{}", me.describe());
    assert_eq!(me.str("user_id"), Some("@melchior:magi"));
    let admin = login(&master_key);
    assert!(admin.ok(), "the admin's password no longer works: {}", admin.describe());
    let admin = admin.str("access_token").unwrap().to_string();
    assert_eq!(room_id(&admin), room, "`#magi:magi` is another room");
    let history = crate::support::synapse::room_events(&client, &admin, &room, 50);
    let said: Vec<&str> = history.iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert!(said.contains(&fact), "{said:?}");
}

/// A stand-in for `systemctl` (no systemd runs here): `start UNIT` runs
/// what the restic unit's `ExecStopPost` runs, `appliance backup cleanup`,
/// with the result in `STANDIN_RESULT`/`STANDIN_EXIT`, as systemd would
/// after a run; `is-active --quiet UNIT` succeeds for the units in
/// `STANDIN_ACTIVE`. It proves what `backup now` and `restore` make of
/// systemd's answers, not systemd.
const SYSTEMCTL_STANDIN: &str = r#"#!/bin/sh
case "$1" in
  start) SERVICE_RESULT="$STANDIN_RESULT" EXIT_STATUS="$STANDIN_EXIT" exec "$STANDIN_APPLIANCE" backup cleanup --config "$STANDIN_CONFIG" ;;
  is-active) for unit in $STANDIN_ACTIVE; do [ "$unit" = "$3" ] && exit 0; done; exit 3 ;;
esac
exit 1
"#;

#[test]
fn backup_now_reports_the_run_and_restore_refuses_while_units_run() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    write(&bin.join("systemctl"), SYSTEMCTL_STANDIN, 0o755);
    let mut config = backup_config(dir.path());
    config["units"] = json!(["matrix-synapse.service", "docker-casper.service"]);
    let config_path = dir.path().join("backup.json");
    fs::write(&config_path, config.to_string()).unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let mut command = appliance();
        command
            .args(args)
            .args(["--config", &config_path.display().to_string()])
            .env("PATH", path)
            .env("STANDIN_APPLIANCE", env!("CARGO_BIN_EXE_appliance"))
            .env("STANDIN_CONFIG", &config_path);
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };

    let out = run(
        &["backup", "now"],
        &[("STANDIN_RESULT", "success"), ("STANDIN_EXIT", "0")],
    );
    succeeded(&out, "appliance backup now");
    assert!(stdout(&out).contains("backup succeeded"), "{}", stdout(&out));
    let out = run(
        &["backup", "now"],
        &[("STANDIN_RESULT", "exit-code"), ("STANDIN_EXIT", "1")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "the backup failed: exit-code (exit status 1)\nhint: `journalctl -u restic-backups-appliance.service`"
        ),
        "{}",
        stderr(&out)
    );

    let out = run(
        &["restore", "latest", "--without-docker"],
        &[("STANDIN_ACTIVE", "docker-casper.service")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("these units run and use the state a restore replaces: docker-casper.service"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.path().join("backup/staging").exists(),
        "a refused restore touched the staging directory"
    );
    // With nothing running it goes on, to restic (which finds no repository).
    let out = run(&["restore", "latest", "--without-docker"], &[("STANDIN_ACTIVE", "")]);
    assert!(
        stderr(&out).contains("restic failed to restore snapshot `latest`"),
        "{}",
        stderr(&out)
    );
}

/// A Matrix host's state big enough that a kill lands mid-way: an agent's
/// volume of many small files and one large one (not compressible, so
/// restic takes a while with it too), and the secrets.
fn big_state(dir: &Path) -> PathBuf {
    let data = dir.join("volumes").join(VOLUME).join("_data");
    for i in 0..400 {
        write(
            &data.join(format!("sessions/{i:04}.jsonl")),
            &format!("{{\"turn\":{i}}}\n"),
            0o640,
        );
    }
    // xorshift: the same bytes every run, none repeating.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..48 * 1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    fs::write(data.join("model-cache.bin"), &big).unwrap();
    write(
        &data.join("MEMORY.md"),
        "the reactor key is under the third stone\n",
        0o600,
    );
    write(&dir.join("secrets/_host/bootstrap/master-key"), "master\n", 0o400);
    write(&dir.join("password"), "correct horse battery staple\n", 0o600);
    let mut config = backup_config(dir);
    config["volumes"] = json!([{ "name": VOLUME, "agent": "casper" }]);
    let secrets = dir.join("secrets").display().to_string();
    config["paths"] = json!([{ "name": "appliance-secrets", "path": secrets, "what": "the appliance's secrets" }]);
    let path = dir.join("backup.json");
    fs::write(&path, config.to_string()).unwrap();
    path
}

/// Starts `command`, waits until `midway` holds (polling every
/// millisecond), then kills it with SIGKILL; fails when it ended first,
/// so each kill is proven to land while it ran.
fn kill_midway(mut command: Command, what: &str, midway: impl Fn() -> bool) {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !midway() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} ended ({status}) before the point the test kills it at");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{what} never got there"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(child.try_wait().unwrap().is_none(), "{what} ended before the kill");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{what} was not killed"
    );
}

fn non_empty(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// docs/backup.md, "Killed mid-way": `kill -9` of `backup prepare` while it
/// copies, of `restic backup` while it writes, and of `appliance restore`
/// while restic restores and while it puts a piece back, each followed by
/// the next run, which completes: the repository checks clean (`restic
/// check --read-data`) and the host holds the snapshot's state, with no
/// half-put-back piece beside it.
#[test]
fn backup_and_restore_killed_mid_way_complete_on_the_next_run() {
    let Some(_) = require_tool("restic", "backups; Debian package `restic`") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config_path = big_state(dir.path());
    let f = Fixture {
        config: config_path,
        pg_bin: PathBuf::from("/nonexistent"),
        dir,
    };
    let config = f.config_arg();
    let staging = f.path("backup/staging");
    succeeded(&f.restic(&["init"]), "restic init");

    // The backup, killed while `prepare` copies the volume.
    let mut prepare = appliance();
    prepare.args(["backup", "prepare", "--config", &config]);
    let copying = staging.join("volumes").join(VOLUME);
    kill_midway(prepare, "appliance backup prepare", || non_empty(&copying));
    assert!(!staging.join("manifest.json").exists(), "the killed prepare finished");
    // Its next run, killed while restic writes the repository.
    succeeded(
        &f.appliance(&["backup", "prepare", "--config", &config], &[]),
        "appliance backup prepare",
    );
    let mut restic = Command::new("restic");
    restic
        .args(["backup", &staging.display().to_string()])
        .env("RESTIC_REPOSITORY", f.path("repo"))
        .env("RESTIC_PASSWORD_FILE", f.path("password"));
    let locks = f.path("repo/locks");
    kill_midway(restic, "restic backup", || non_empty(&locks));
    assert!(
        non_empty(&locks),
        "the killed restic left no lock to prove the next run copes with"
    );
    // The unit's ExecStopPost runs after a killed ExecStart too.
    f.cleanup(&[("SERVICE_RESULT", "signal"), ("EXIT_STATUS", "KILL")]);
    assert_eq!(
        serde_json::from_str::<Value>(&fs::read_to_string(f.path("backup/status.json")).unwrap()).unwrap()["ok"],
        false
    );
    // The next run completes.
    succeeded(
        &f.appliance(&["backup", "prepare", "--config", &config], &[]),
        "appliance backup prepare",
    );
    succeeded(
        &f.restic(&["backup", &staging.display().to_string()]),
        "restic backup after the kills",
    );
    // The unit's prune takes an exclusive lock: `prepare` removed the stale one.
    succeeded(
        &f.restic(&["forget", "--prune", "--keep-daily", "7"]),
        "restic forget --prune after the kills",
    );
    f.cleanup(&[("SERVICE_RESULT", "success")]);
    succeeded(
        &f.appliance(&["backup", "check", "--read-data", "--config", &config], &[]),
        "appliance backup check --read-data after the kills",
    );

    restore_killed_mid_way_completes(&f);
}

fn restore_killed_mid_way_completes(f: &Fixture) {
    let config = f.config_arg();
    let data = f.path("volumes").join(VOLUME).join("_data");
    let expected = fs::read(data.join("model-cache.bin")).unwrap();
    // After the backup: the agent changes its memory, a secret is lost.
    write(&data.join("MEMORY.md"), "a later thought\n", 0o600);
    fs::remove_dir_all(data.join("sessions")).unwrap();
    fs::remove_dir_all(f.path("secrets")).unwrap();

    let restore = || {
        let mut command = appliance();
        command.args(["restore", "latest", "--without-docker", "--config", &config]);
        command
    };
    let staging = f.path("backup/staging");
    kill_midway(restore(), "appliance restore (restic restoring)", || {
        non_empty(&staging)
    });
    let beside = f.path("volumes").join(VOLUME).join("._data.appliance-restore");
    kill_midway(restore(), "appliance restore (putting the volume back)", || {
        non_empty(&beside)
    });
    let out = f.appliance(&["restore", "latest", "--without-docker", "--config", &config], &[]);
    succeeded(&out, "appliance restore after the kills");

    assert_eq!(
        fs::read_to_string(data.join("MEMORY.md")).unwrap(),
        "the reactor key is under the third stone\n"
    );
    assert_eq!(fs::read_dir(data.join("sessions")).unwrap().count(), 400);
    assert!(fs::read(data.join("model-cache.bin")).unwrap() == expected);
    assert_eq!(
        fs::read_to_string(f.path("secrets/_host/bootstrap/master-key")).unwrap(),
        "master\n"
    );
    assert!(!beside.exists(), "a half-put-back volume was left beside it");
    assert!(!staging.exists(), "the staging directory was left");
    succeeded(
        &f.appliance(&["backup", "check", "--config", &config], &[]),
        "appliance backup check after the killed restores",
    );
}
