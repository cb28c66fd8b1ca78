//! A real Synapse for tests: from a venv (`APPLIANCE_SYNAPSE_VENV`, default
//! `.ci/venv`, made by `.ci/run`), on loopback, with the homeserver settings
//! our generator writes for the default spec: on a real PostgreSQL
//! (Debian's), started by the test in Synapse's data directory with a socket
//! directory of its own. Stopped with SIGTERM (then SIGKILL) when dropped,
//! Synapse first, then its PostgreSQL.

#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use agent_appliance::generator::model::STATE_DIR;
use agent_appliance::on_host::bootstrap::client::Client;
use serde_json::{Value, json};

use crate::support::{in_ci, root};

/// The venv holding `matrix-synapse`; `None` (after a loud skip message)
/// when it is missing outside CI. In CI a missing Synapse fails the test.
pub fn venv() -> Option<PathBuf> {
    let venv = std::env::var_os("APPLIANCE_SYNAPSE_VENV").map_or_else(|| root().join(".ci/venv"), PathBuf::from);
    let python = venv.join("bin/python");
    let installed = python.is_file()
        && fs::read_dir(venv.join("lib")).is_ok_and(|dirs| {
            dirs.flatten().any(|d| {
                let packages = d.path().join("site-packages");
                packages.join("synapse/app/homeserver.py").is_file() && packages.join("psycopg2").is_dir()
            })
        });
    if !installed {
        assert!(
            !in_ci(),
            "Synapse is required in CI but `{}` has no matrix-synapse with psycopg2\nhint: `.ci/run` creates it; or set APPLIANCE_SYNAPSE_VENV",
            venv.display()
        );
        eprintln!(
            "\n!!! SKIPPED: no matrix-synapse with psycopg2 in `{}` (run `python3 -m venv .ci/venv && .ci/venv/bin/pip install matrix-synapse==1.163.2 psycopg2-binary==2.9.13`, or set APPLIANCE_SYNAPSE_VENV); CI=true makes this a failure !!!\n",
            venv.display()
        );
        return None;
    }
    // Synapse runs on PostgreSQL, as on the appliance.
    postgres_bin()?;
    Some(venv)
}

/// Debian's PostgreSQL server binaries (package `postgresql`), else the
/// `initdb` on PATH; `None` (after a loud skip message) when neither is
/// there outside CI. In CI a missing PostgreSQL fails the test.
pub fn postgres_bin() -> Option<PathBuf> {
    let debian = fs::read_dir("/usr/lib/postgresql").ok().and_then(|versions| {
        let mut dirs: Vec<PathBuf> = versions
            .flatten()
            .map(|v| v.path().join("bin"))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        dirs.sort_by_key(|dir| {
            let version = dir.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str());
            version.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
        });
        dirs.pop()
    });
    if debian.is_some() {
        return debian;
    }
    crate::support::require_tool("initdb", "Synapse's database in the tests; Debian package `postgresql`")
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
}

/// The generated settings for the default spec, with only what a test
/// must change: data paths under `data`, secret paths under `state_dir`
/// instead of /var/lib/appliance, and one loopback listener on `port`.
/// Rate limits are Synapse's defaults, as on the appliance.
pub fn settings(data: &Path, state_dir: &Path, port: u16) -> Value {
    let appliance =
        agent_appliance::operator::commands::load(&root().join("appliance.toml")).expect("default spec loads");
    let mut settings = rerooted_settings(&appliance, data, state_dir);
    let listener = &mut settings["listeners"][0];
    listener["port"] = json!(port);
    listener["bind_addresses"] = json!(["127.0.0.1"]);
    settings["public_baseurl"] = json!(format!("http://127.0.0.1:{port}/"));
    settings
}

/// The generated Synapse settings of `appliance` with paths re-rooted:
/// media, signing key and pid file (and an SQLite database) below `data`,
/// secret files below the re-rooted state dir. Listeners, rate limits and
/// everything else are as generated; on PostgreSQL, `Synapse::spawn` starts
/// the cluster in `data/postgres` and points the settings at its socket.
pub fn rerooted_settings(
    appliance: &agent_appliance::generator::model::Appliance,
    data: &Path,
    state_dir: &Path,
) -> Value {
    let mut settings = agent_appliance::generator::render::synapse::settings(appliance);
    if settings["database"]["name"] == "sqlite3" {
        settings["database"]["args"]["database"] = json!(data.join("homeserver.db"));
    }
    settings["media_store_path"] = json!(data.join("media"));
    settings["signing_key_path"] = json!(data.join("signing.key"));
    settings["pid_file"] = json!(data.join("homeserver.pid"));
    for key in [
        "registration_shared_secret_path",
        "macaroon_secret_key_path",
        "form_secret_path",
    ] {
        let path = settings[key].as_str().unwrap().to_string();
        let relative = path.strip_prefix(STATE_DIR).unwrap().trim_start_matches('/');
        settings[key] = json!(state_dir.join(relative));
    }
    settings
}

/// Writes a test secret to each secret file `settings` names (what
/// `appliance bootstrap --secrets-only` makes on the appliance); returns
/// the registration shared secret.
pub fn write_test_secrets(settings: &Value) -> String {
    let mut shared_secret = String::new();
    for key in [
        "registration_shared_secret_path",
        "macaroon_secret_key_path",
        "form_secret_path",
    ] {
        let path = PathBuf::from(settings[key].as_str().unwrap());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let secret = format!("test-{key}-{}", std::process::id());
        fs::write(&path, &secret).unwrap();
        if key == "registration_shared_secret_path" {
            shared_secret = secret;
        }
    }
    shared_secret
}

/// Registers `username` (no admin) with Synapse's shared-secret admin API,
/// as someone holding the host's registration secret can; returns the new
/// account's access token.
pub fn register_with_shared_secret(client: &Client, secret: &str, username: &str, password: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let nonce = client.get("/_synapse/admin/v1/register", None).unwrap();
    let nonce = nonce.str("nonce").unwrap().to_string();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{nonce}\0{username}\0{password}\0notadmin").as_bytes());
    let body = json!({
        "nonce": nonce, "username": username, "password": password, "admin": false,
        "mac": hex::encode(mac.finalize().into_bytes()),
    });
    let reply = client.post("/_synapse/admin/v1/register", None, &body).unwrap();
    assert!(reply.ok(), "register {username}: {}", reply.describe());
    reply.str("access_token").unwrap().to_string()
}

/// Polls `ready` until it says yes; fails the test, with the last `lines`
/// lines of `log`, if `child` (the server `what`) exits first or `within`
/// passes.
fn wait_until_ready(
    what: &str,
    child: &mut Child,
    within: Duration,
    log: &Path,
    lines: usize,
    mut ready: impl FnMut() -> bool,
) {
    let started = Instant::now();
    let tail = || {
        let text = fs::read_to_string(log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    };
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited with {status}:\n{}", tail());
        }
        assert!(
            started.elapsed() < within,
            "{what} not ready after {} s:\n{}",
            within.as_secs(),
            tail()
        );
        sleep(Duration::from_millis(50));
    }
}

/// A new room made by `token` with `preset` (`public_chat`,
/// `private_chat`); its ID.
pub fn create_room(client: &Client, token: &str, preset: &str) -> String {
    let room = client
        .post(
            "/_matrix/client/v3/createRoom",
            Some(token),
            &json!({ "preset": preset }),
        )
        .unwrap();
    assert!(room.ok(), "{}", room.describe());
    room.str("room_id").unwrap().to_string()
}

/// `POST /_matrix/client/v3/rooms/<room>/<action>` (join, leave, invite)
/// with `body`, as `token`; the homeserver's reply.
pub fn room_post(
    client: &Client,
    token: &str,
    room: &str,
    action: &str,
    body: &Value,
) -> agent_appliance::on_host::bootstrap::client::Reply {
    use agent_appliance::on_host::bootstrap::client::segment;
    client
        .post(
            &format!("/_matrix/client/v3/rooms/{}/{action}", segment(room)),
            Some(token),
            body,
        )
        .unwrap()
}

/// The latest `limit` events of `room` as `token` reads them, oldest first.
pub fn room_events(client: &Client, token: &str, room: &str, limit: u32) -> Vec<Value> {
    use agent_appliance::on_host::bootstrap::client::segment;
    let reply = client
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}",
                segment(room)
            ),
            Some(token),
        )
        .unwrap();
    assert!(reply.ok(), "{}", reply.describe());
    let mut events = reply.body["chunk"].as_array().unwrap().clone();
    events.reverse();
    events
}

pub struct Synapse {
    child: Option<Child>,
    pub url: String,
    pub log: PathBuf,
    /// How it was started (the wrapper, then the command), to start it again.
    command: Vec<PathBuf>,
    data: PathBuf,
    /// Its database, stopped after Synapse (fields drop after `drop`).
    postgres: Option<Postgres>,
}

impl Synapse {
    /// Starts Synapse (without waiting for it): its data and log go to
    /// `data`, its secrets are read from `state_dir`, which bootstrap's
    /// `--secrets-only` must have filled.
    pub fn start(venv: &Path, data: &Path, state_dir: &Path, port: u16) -> Synapse {
        Synapse::start_with(venv, data, state_dir, port, &[], &["127.0.0.1"])
    }

    /// As `start`, with the command run through `wrap` (e.g. `ip netns
    /// exec NAME`) and listening on `bind` (loopback first: `url` is there).
    pub fn start_with(venv: &Path, data: &Path, state_dir: &Path, port: u16, wrap: &[&str], bind: &[&str]) -> Synapse {
        let mut settings = settings(data, state_dir, port);
        settings["listeners"][0]["bind_addresses"] = json!(bind);
        let wrap: Vec<String> = wrap.iter().map(|w| w.to_string()).collect();
        Synapse::spawn(venv, data, &settings, &format!("http://127.0.0.1:{port}"), &wrap)
    }

    /// Starts Synapse with `settings` (without waiting for it), run through
    /// `wrapper` (e.g. `nsenter --net=... --`); `url` is where it answers.
    /// With PostgreSQL settings, the cluster in `data/postgres` is started
    /// first (made on the first start, kept for a restart on the same
    /// `data`), and Synapse reaches it on its socket directory.
    pub fn spawn(venv: &Path, data: &Path, settings: &Value, url: &str, wrapper: &[String]) -> Synapse {
        fs::create_dir_all(data).unwrap();
        let mut settings = settings.clone();
        let postgres = (settings["database"]["name"] == "psycopg2").then(|| {
            let postgres = Postgres::start(&data.join("postgres"));
            settings["database"]["args"]["host"] = json!(postgres.socket_dir);
            postgres
        });
        let settings = &settings;
        let config = data.join("homeserver.yaml");
        // JSON is YAML.
        fs::write(&config, serde_json::to_string_pretty(settings).unwrap()).unwrap();
        let mut command: Vec<PathBuf> = wrapper.iter().map(PathBuf::from).collect();
        command.push(venv.join("bin/python"));
        command.extend(["-m", "synapse.app.homeserver", "-c"].map(PathBuf::from));
        command.push(config);
        let mut synapse = Synapse {
            child: None,
            url: url.to_string(),
            log: data.join("synapse.log"),
            command,
            data: data.to_path_buf(),
            postgres,
        };
        synapse.start_homeserver();
        synapse
    }

    /// Starts the homeserver again after `stop_homeserver` (without
    /// waiting for it), as it was started; its log starts afresh.
    pub fn start_homeserver(&mut self) {
        assert!(self.child.is_none(), "synapse already runs");
        let out = fs::File::create(&self.log).unwrap();
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .current_dir(&self.data)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("failed to start synapse");
        self.child = Some(child);
    }

    /// Stops the homeserver, not its database: what a restore needs
    /// (`systemctl stop matrix-synapse`, PostgreSQL left running).
    pub fn stop_homeserver(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::stop_child(&mut child, rustix::process::Signal::TERM, Duration::from_secs(10));
        }
    }

    /// Its PostgreSQL, when it runs on one.
    pub fn postgres(&self) -> Option<&Postgres> {
        self.postgres.as_ref()
    }

    /// The exit status, if Synapse has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits until `/versions` answers; panics with the log's tail if
    /// Synapse exits or takes longer than a minute.
    pub fn wait_ready(&mut self) {
        let started = Instant::now();
        let client = Client::new(
            &self.url,
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(5),
        );
        let child = self.child.as_mut().unwrap();
        wait_until_ready("synapse", child, Duration::from_secs(60), &self.log, 40, || {
            client
                .get("/_matrix/client/versions", None)
                .is_ok_and(|reply| reply.ok())
        });
        eprintln!(
            "synapse at {} ready after {:.1} s",
            self.url,
            started.elapsed().as_secs_f64()
        );
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        self.stop_homeserver();
    }
}

/// A test-only Synapse module (never part of the product): at the first
/// event of the type named in `<dir>/trigger` ("TYPE hold" or "TYPE
/// crash"), while Synapse builds it, it either holds that request until
/// `<dir>/release` exists (after renaming `trigger` to `held`, which tells
/// the test it is there), or ends Synapse at once, as a power cut would.
/// The events of a `createRoom` are built in a known order (create, the
/// creator's join, then power levels and the rest in one batch), so a
/// trigger on `m.room.power_levels` stops a room creation exactly after
/// the room, its alias and its creator exist and before any of its
/// settings do; one on `m.room.member` stops it before the creator joined.
const HOLD_MODULE: &str = r#"
import os


class HoldOrCrash:
    def __init__(self, config, api):
        self.dir = config["dir"]
        self.api = api
        api.register_third_party_rules_callbacks(check_event_allowed=self.check)

    @staticmethod
    def parse_config(config):
        return config

    async def check(self, event, state_events):
        trigger = os.path.join(self.dir, "trigger")
        try:
            with open(trigger) as f:
                event_type, action = f.read().split()
        except FileNotFoundError:
            return True, None
        if event.type != event_type:
            return True, None
        if action == "crash":
            # Once: the Synapse started after the crash must not crash too.
            os.remove(trigger)
            os._exit(137)
        os.rename(trigger, os.path.join(self.dir, "held"))
        while not os.path.exists(os.path.join(self.dir, "release")):
            await self.api.sleep(0.05)
        return True, None
"#;

/// Where the hold module looks for its trigger, and what it tells.
pub struct HoldPoint {
    pub dir: PathBuf,
}

impl HoldPoint {
    /// Arms the module for the next event of `event_type`: `hold` or `crash`.
    pub fn arm(&self, event_type: &str, action: &str) {
        let _ = fs::remove_file(self.dir.join("held"));
        let _ = fs::remove_file(self.dir.join("release"));
        fs::write(self.dir.join("trigger"), format!("{event_type} {action}\n")).unwrap();
    }

    /// Whether a request is being held now.
    pub fn held(&self) -> bool {
        self.dir.join("held").exists()
    }

    pub fn release(&self) {
        fs::write(self.dir.join("release"), "").unwrap();
    }
}

impl Synapse {
    /// As `start`, with the hold module loaded (its directory inside
    /// `data`); nothing is held until the returned point is armed.
    pub fn start_with_hold_point(venv: &Path, data: &Path, state_dir: &Path, port: u16) -> (Synapse, HoldPoint) {
        let point = HoldPoint {
            dir: data.join("hold-point"),
        };
        fs::create_dir_all(&point.dir).unwrap();
        // Synapse runs as `python -m` in `data`, so `data` is on its path.
        fs::write(data.join("appliance_test_hold.py"), HOLD_MODULE).unwrap();
        let mut settings = settings(data, state_dir, port);
        settings["modules"] = json!([{
            "module": "appliance_test_hold.HoldOrCrash",
            "config": { "dir": point.dir },
        }]);
        let synapse = Synapse::spawn(venv, data, &settings, &format!("http://127.0.0.1:{port}"), &[]);
        (synapse, point)
    }
}

/// When the killing proxy SIGKILLs its client, relative to the first
/// request whose line contains the trigger (e.g. `POST /_matrix/client/v3/createRoom`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillPoint {
    /// Before the request reaches Synapse: nothing of it was done.
    BeforeForwarding,
    /// After Synapse answered it, before the answer reaches the client,
    /// so the client never makes its next request.
    AfterAnswer,
    /// Once the request is forwarded and `held` says Synapse is inside it;
    /// Synapse goes on with it after the client is gone.
    WhileHeld,
}

/// A one-shot HTTP/1.1 forwarder on loopback between a client and
/// Synapse that kills the client (by pid) at an exact point of one
/// request, then forwards everything else untouched. Bodies are read by
/// `Content-Length` or chunked framing and forwarded as they came.
pub struct KillingProxy {
    pub url: String,
    state: std::sync::Arc<ProxyState>,
}

struct ProxyState {
    upstream: String,
    trigger: String,
    point: KillPoint,
    held: Box<dyn Fn() -> bool + Send + Sync>,
    victim: std::sync::Mutex<Option<u32>>,
    /// Set once the trigger fired; then Synapse's answer to that request,
    /// when it comes.
    fired: std::sync::atomic::AtomicBool,
    answered: std::sync::atomic::AtomicBool,
}

impl KillingProxy {
    pub fn start(
        upstream: &str,
        trigger: &str,
        point: KillPoint,
        held: impl Fn() -> bool + Send + Sync + 'static,
    ) -> KillingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = std::sync::Arc::new(ProxyState {
            upstream: upstream.trim_start_matches("http://").to_string(),
            trigger: trigger.to_string(),
            point,
            held: Box::new(held),
            victim: std::sync::Mutex::new(None),
            fired: std::sync::atomic::AtomicBool::new(false),
            answered: std::sync::atomic::AtomicBool::new(false),
        });
        let shared = state.clone();
        // The thread ends with the test binary; each connection's thread
        // ends when either side closes.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || shared.serve(stream));
            }
        });
        KillingProxy { url, state }
    }

    /// The process to kill when the point is reached.
    pub fn set_victim(&self, pid: u32) {
        *self.state.victim.lock().unwrap() = Some(pid);
    }

    pub fn fired(&self) -> bool {
        self.state.fired.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until Synapse has answered the request that fired the point.
    pub fn wait_answered(&self, within: Duration) {
        let started = Instant::now();
        while !self.state.answered.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                started.elapsed() < within,
                "synapse did not answer the held request within {within:?}"
            );
            sleep(Duration::from_millis(20));
        }
    }
}

/// One HTTP message head and body, as bytes; `None` when the peer closed.
fn read_message(reader: &mut std::io::BufReader<std::net::TcpStream>) -> Option<(String, Vec<u8>)> {
    use std::io::{BufRead, Read};
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        // Kept framed as it came: the other side reads the same bytes.
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            body.extend_from_slice(size.as_bytes());
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or_default(), 16).ok()?;
            if size == 0 {
                loop {
                    let mut trailer = String::new();
                    if reader.read_line(&mut trailer).ok()? == 0 {
                        return None;
                    }
                    body.extend_from_slice(trailer.as_bytes());
                    if trailer == "\r\n" {
                        return Some((head, body));
                    }
                }
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk);
        }
    }
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    body.resize(length, 0);
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// Writes one HTTP message: its head and body as [`read_message`] returns them.
fn write_message(to: &mut std::net::TcpStream, head: &str, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    to.write_all(head.as_bytes())?;
    to.write_all(body)
}

impl ProxyState {
    fn kill_victim(&self) {
        let pid = self.victim.lock().unwrap().expect("the killing proxy has no victim");
        let pid = rustix::process::Pid::from_raw(pid.cast_signed()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    }

    fn serve(&self, client: std::net::TcpStream) {
        use std::sync::atomic::Ordering::SeqCst;
        let Ok(upstream) = std::net::TcpStream::connect(&self.upstream) else {
            return;
        };
        let mut from_client = std::io::BufReader::new(client.try_clone().unwrap());
        let mut from_upstream = std::io::BufReader::new(upstream.try_clone().unwrap());
        let (mut client, mut upstream) = (client, upstream);
        while let Some((head, body)) = read_message(&mut from_client) {
            let request_line = head.lines().next().unwrap_or_default().to_string();
            let fires = request_line.contains(&self.trigger) && !self.fired.swap(true, SeqCst);
            if fires && self.point == KillPoint::BeforeForwarding {
                self.kill_victim();
                return;
            }
            if write_message(&mut upstream, &head, &body).is_err() {
                return;
            }
            if fires && self.point == KillPoint::WhileHeld {
                let started = Instant::now();
                while !(self.held)() {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "synapse never held `{request_line}`"
                    );
                    sleep(Duration::from_millis(20));
                }
                self.kill_victim();
            }
            let Some((answer_head, answer_body)) = read_message(&mut from_upstream) else {
                return;
            };
            if fires {
                self.answered.store(true, SeqCst);
                if self.point == KillPoint::AfterAnswer {
                    self.kill_victim();
                    return;
                }
            }
            if write_message(&mut client, &answer_head, &answer_body).is_err() {
                return;
            }
        }
    }
}

/// The PostgreSQL role and database the generated settings name.
pub const POSTGRES_NAME: &str = agent_appliance::generator::render::synapse::POSTGRES_NAME;

/// A real PostgreSQL for Synapse, as NixOS' module sets it up for the
/// appliance: a cluster made with `--locale=C --encoding=UTF8`, the role
/// and database `matrix-synapse` (the database made with the cluster's
/// locale, as `ensureDatabases` does), no TCP listener, and peer
/// authentication on the socket. The one difference: Synapse here runs as
/// the test's user, not `matrix-synapse`, so an ident map lets that OS user
/// in as the role. PostgreSQL refuses to run as root, so as root the
/// server runs as `nobody`, owning the cluster. Stopped (fast shutdown)
/// when dropped; the cluster stays in its directory for a restart.
pub struct Postgres {
    child: Option<Child>,
    pub socket_dir: PathBuf,
    log: PathBuf,
}

/// The OS user the server runs as when the test runs as root.
const POSTGRES_OS_USER: &str = "nobody";

impl Postgres {
    /// Starts the cluster in `dir` (`dir/data`, socket in `dir/socket`),
    /// making it on the first start, and waits until it accepts Synapse.
    pub fn start(dir: &Path) -> Postgres {
        let bin = postgres_bin().expect("PostgreSQL is checked by `venv()`");
        let data = dir.join("data");
        let socket_dir = dir.join("socket");
        let log = dir.join("postgres.log");
        let fresh = !data.join("PG_VERSION").is_file();
        if fresh {
            fs::create_dir_all(&data).unwrap();
            fs::create_dir_all(&socket_dir).unwrap();
            Postgres::make_reachable(dir);
            Postgres::hand_over(&[&data, &socket_dir]);
            Postgres::initdb(&bin, &data);
        }
        let out = fs::File::create(&log).unwrap();
        let child = Postgres::as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&socket_dir)
            // Socket only, as on the appliance.
            .args(["-c", "listen_addresses="])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("failed to start postgres");
        let mut postgres = Postgres {
            child: Some(child),
            socket_dir,
            log,
        };
        postgres.wait_ready(&bin);
        if fresh {
            // What `ensureUsers` (with `ensureDBOwnership`) and
            // `ensureDatabases` do on NixOS.
            postgres.psql_as_superuser(&bin, &format!("CREATE ROLE \"{POSTGRES_NAME}\" LOGIN"));
            postgres.psql_as_superuser(
                &bin,
                &format!("CREATE DATABASE \"{POSTGRES_NAME}\" OWNER \"{POSTGRES_NAME}\""),
            );
        }
        postgres
    }

    fn running_as_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// The name of the OS user running the test (and Synapse).
    fn test_os_user() -> String {
        let out = Command::new("id").arg("-un").output().expect("failed to run `id -un`");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The primary group of `nobody` (`nogroup` on Debian).
    fn server_os_group() -> String {
        let out = Command::new("id")
            .args(["-g", POSTGRES_OS_USER])
            .output()
            .expect("failed to run `id -g`");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn server_os_user() -> String {
        if Postgres::running_as_root() {
            POSTGRES_OS_USER.to_string()
        } else {
            Postgres::test_os_user()
        }
    }

    /// `program` run as the server's OS user: `nobody` through `setpriv`
    /// (which execs, so the pid is the server's own) when root.
    fn as_server_user(program: &Path) -> Command {
        if !Postgres::running_as_root() {
            return Command::new(program);
        }
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={POSTGRES_OS_USER}"))
            .arg(format!("--regid={}", Postgres::server_os_group()))
            .args(["--clear-groups", "--"])
            .arg(program);
        command
    }

    /// As root: `paths` owned by the server's user.
    fn hand_over(paths: &[&Path]) {
        if !Postgres::running_as_root() {
            return;
        }
        for path in paths {
            let status = Command::new("chown")
                .arg(format!("{POSTGRES_OS_USER}:"))
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success(), "chown {} failed", path.display());
        }
    }

    /// As root: `dir` and every directory above it up to the system's temp
    /// dir that the test made private (a temp dir is 0700) made
    /// traversable, never listable, so the server's user reaches the
    /// cluster below it. Nothing outside the temp dir is touched.
    fn make_reachable(dir: &Path) {
        if !Postgres::running_as_root() {
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let temp = std::env::temp_dir();
        for ancestor in dir.ancestors().take_while(|a| a.starts_with(&temp) && *a != temp) {
            let Ok(meta) = fs::metadata(ancestor) else { continue };
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                fs::set_permissions(ancestor, fs::Permissions::from_mode(mode | 0o001)).unwrap();
            }
        }
    }

    /// The cluster as nixpkgs' `initdbArgs` makes it for the appliance
    /// (C collation, which Synapse requires), with peer authentication on
    /// the socket only: the server's OS user is the superuser `postgres`,
    /// the test's OS user is the role `matrix-synapse`.
    fn initdb(bin: &Path, data: &Path) {
        let out = Postgres::as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(data)
            .args(["--locale=C", "--encoding=UTF8", "--username=postgres"])
            .args(["--auth-local=peer", "--auth-host=reject"])
            .output()
            .expect("failed to run initdb");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let map = "appliance";
        fs::write(data.join("pg_hba.conf"), format!("local all all peer map={map}\n")).unwrap();
        fs::write(
            data.join("pg_ident.conf"),
            format!(
                "{map} {} postgres\n{map} {} {POSTGRES_NAME}\n",
                Postgres::server_os_user(),
                Postgres::test_os_user()
            ),
        )
        .unwrap();
        Postgres::hand_over(&[&data.join("pg_hba.conf"), &data.join("pg_ident.conf")]);
    }

    /// Runs `sql` in `database` as the superuser; its rows, unaligned, one
    /// a line.
    pub fn query(&self, database: &str, sql: &str) -> String {
        let bin = postgres_bin().expect("PostgreSQL is checked by `venv()`");
        self.psql(&bin, database, sql)
    }

    fn psql_as_superuser(&self, bin: &Path, sql: &str) -> String {
        self.psql(bin, "postgres", sql)
    }

    fn psql(&self, bin: &Path, database: &str, sql: &str) -> String {
        let out = Postgres::as_server_user(&bin.join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tA",
                "-c",
                sql,
            ])
            .output()
            .expect("failed to run psql");
        assert!(
            out.status.success(),
            "psql `{sql}` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Waits until the server accepts connections on its socket; panics
    /// with its log if it exits or takes longer than 30 s.
    fn wait_ready(&mut self, bin: &Path) {
        let socket_dir = self.socket_dir.clone();
        let child = self.child.as_mut().unwrap();
        wait_until_ready(
            "postgres",
            child,
            Duration::from_secs(30),
            &self.log,
            usize::MAX,
            || {
                Command::new(bin.join("pg_isready"))
                    .arg("-h")
                    .arg(&socket_dir)
                    .arg("-q")
                    .status()
                    .is_ok_and(|s| s.success())
            },
        );
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SIGINT: fast shutdown (roll back, disconnect, stop).
        super::stop_child(&mut child, rustix::process::Signal::INT, Duration::from_secs(20));
    }
}
