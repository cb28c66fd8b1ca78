//! The approval broker (docs/warden.md, "Code execution approvals"): the
//! Docker socket an agent with `approve = ["code-execution"]` gets is this,
//! served on the host by the warden, not its code sandbox's dockerd. Each
//! connection carries one request: the broker reads its head, classifies
//! it, and either forwards it, refuses it (403, a JSON `message` the docker
//! CLI prints), or holds it until an admin's `!approve` (approvals.rs);
//! under a standing approval (`!approve <id> <duration>`) what it would
//! hold is forwarded at once, audited.
//!
//! One request per connection: the head sent upstream says `Connection:
//! close` (with `Upgrade` kept for attach and exec streams), so dockerd
//! (Go's net/http) handles that one request and reads nothing more as HTTP;
//! the broker then copies bytes both ways, which also carries hijacked
//! streams. So no second request can ride behind a first one it passed.

use std::io::{self, Read, Write};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::approvals::{Outcome, Shared};
use crate::on_host::audit::{self, Entry};
use crate::on_host::bootstrap::client::{Client, segment};

/// The longest request head read; Docker's are far shorter.
const MAX_HEAD: usize = 64 * 1024;
/// The longest JSON body read to show on a card (a container's config).
const MAX_BODY: usize = 1024 * 1024;
/// What a card shows of a command or an image at most.
const MAX_SHOWN: usize = 300;

/// What a request does to the code sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `POST /containers/create`: a container that will run a command.
    Create,
    /// `POST /containers/{id}/exec`: a command in a running container.
    Exec,
    /// `POST /build`: a Dockerfile's `RUN` steps.
    Build,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// Runs no code of its own: forwarded at once.
    Pass,
    /// Starts code: waits for an admin.
    Hold(Action),
    /// Never through the broker, with why.
    Refuse(String),
}

/// Classifies a request by its method and target as dockerd's router
/// would see them: the path percent-decoded, the API version prefix
/// dropped. Anything odd enough that the router might read it otherwise
/// (a dot segment, an empty one, a backslash, an absolute URL) is refused.
pub fn classify(method: &str, target: &str) -> Class {
    if !matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "DELETE") {
        return Class::Refuse(format!(
            "method `{}` is not part of Docker's API",
            method.escape_debug()
        ));
    }
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let Some(path) = percent_decode(path) else {
        return Class::Refuse("the request path is not valid percent-encoded UTF-8".to_string());
    };
    let odd = !path.starts_with('/')
        || path.chars().any(|c| c.is_control() || c == '\\' || c == '#')
        || path[1..].split('/').any(|s| s.is_empty() || s == "." || s == "..");
    if odd && path != "/" {
        return Class::Refuse(format!(
            "the request path `{}` is not one Docker's API uses",
            path.escape_debug()
        ));
    }
    let mut segments: Vec<&str> = path[1..].split('/').collect();
    if segments.first().is_some_and(|s| is_version(s)) {
        segments.remove(0);
    }
    let post = method == "POST";
    match segments.as_slice() {
        ["containers", "create"] if post => Class::Hold(Action::Create),
        // dockerd's router matches `/containers/{name:.*}/exec`: a name may
        // hold `/` (a legacy link's `/other/alias` names the linked
        // container), so every path under `containers/` ending so counts.
        ["containers", _, .., "exec"] if post => Class::Hold(Action::Exec),
        ["build"] if post => Class::Hold(Action::Build),
        // `docker cp` into a container: new files under a container that
        // `docker start` then runs again would run code no admin saw (an
        // approved container's, or one of Hermes' own `sleep` ones). Hermes
        // never copies in; an agent writes files with an exec, which is held.
        ["containers", _, .., "archive"] if method == "PUT" => Class::Refuse(
            "copying files into a container would change what it runs without an admin's approval; write them with `docker exec` (approved in the ops room) instead".to_string(),
        ),
        // BuildKit over gRPC (`docker buildx`) would build without `/build`;
        // swarm services and plugins run code the broker cannot show.
        ["grpc", ..] => Class::Refuse("BuildKit's gRPC endpoint builds without `/build`; use `docker build` with the classic builder (DOCKER_BUILDKIT=0)".to_string()),
        ["swarm" | "services" | "plugins" | "tasks" | "secrets" | "configs", ..] if method != "GET" && method != "HEAD" => {
            Class::Refuse("swarm services and plugins are not offered to agents".to_string())
        }
        _ => Class::Pass,
    }
}

/// `v1.43`, as dockerd's router matches `/v{version:[0-9.]+}`.
fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A request head as read from the agent.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub version: String,
    /// Name and value, in order, as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head sent upstream: every header but the hop-by-hop ones, and
    /// one `Connection` that ends the connection after this request (and
    /// keeps an upgrade to a raw stream, which attach and exec use).
    pub fn upstream(&self) -> Vec<u8> {
        let mut out = format!("{} {} {}\r\n", self.method, self.target, self.version);
        let upgrade = self.header("Upgrade").is_some();
        for (name, value) in &self.headers {
            let hop = ["connection", "keep-alive", "proxy-connection", "te", "trailer"];
            if hop.iter().any(|h| name.eq_ignore_ascii_case(h)) || (!upgrade && name.eq_ignore_ascii_case("upgrade")) {
                continue;
            }
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(if upgrade {
            "Connection: Upgrade, close\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        out.into_bytes()
    }
}

/// Parses the head (up to the empty line); strict where a lenient reading
/// could differ from dockerd's.
pub fn parse_head(bytes: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the request head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err("malformed request line".to_string());
    };
    if !matches!(*version, "HTTP/1.1" | "HTTP/1.0") {
        return Err("only HTTP/1.0 and 1.1 are spoken here".to_string());
    }
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err("malformed header line".to_string());
        };
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token || value.chars().any(|c| c.is_control() && c != '\t') {
            return Err("malformed header line".to_string());
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Head {
        method: (*method).to_string(),
        target: (*target).to_string(),
        version: (*version).to_string(),
        headers,
    })
}

/// Where the warden's notices and records go, for the broker's threads.
#[derive(Clone)]
pub struct Notifier {
    pub homeserver: String,
    pub token: String,
    pub ops: String,
    pub audit: PathBuf,
}

impl Notifier {
    fn audit(&self, kind: &str, actor: &str, subject: &str, detail: &str) -> Result<()> {
        let entry = Entry {
            kind,
            actor,
            subject,
            detail,
        };
        audit::append(&self.audit, &entry)?;
        eprintln!(
            "{}",
            audit::escape_for_terminal(&format!("{kind} {actor} -> {subject}: {detail}"))
        );
        Ok(())
    }

    /// Posts `text` in the ops room; the event id Synapse gave it.
    fn notice(&self, txn: &str, text: &str) -> Result<String> {
        let client = Client::new(
            &self.homeserver,
            Instant::now() + Duration::from_secs(60),
            Duration::from_secs(30),
        );
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            segment(&self.ops),
            segment(txn)
        );
        let reply = client.put(
            &path,
            Some(&self.token),
            &json!({ "msgtype": "m.notice", "body": text }),
        )?;
        if !reply.ok() {
            bail!("failed to post in the ops room ({})", reply.describe());
        }
        Ok(reply.str("event_id").unwrap_or_default().to_string())
    }
}

/// One agent's broker: where it listens, where it forwards.
#[derive(Clone)]
pub struct Broker {
    pub agent: String,
    pub sandbox: String,
    pub socket: PathBuf,
    pub upstream: PathBuf,
    /// The group the agent's sandbox runs as, which may connect.
    pub gid: u32,
    pub timeout: Duration,
    pub shared: Arc<Shared>,
    pub notifier: Notifier,
}

impl Broker {
    /// Binds the socket (root:`gid`, 0660; a stale one is replaced) and
    /// serves it on a thread of its own, each connection on another.
    pub fn spawn(self) -> Result<()> {
        let dir = self.socket.parent().context("the broker socket has no directory")?;
        // As tmpfiles makes it on the appliance: the agent's group may enter.
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)))
            .and_then(|()| chown(dir, Some(0), Some(self.gid)))
            .with_context(|| format!("cannot make `{}` root's, of group {}, 0750", dir.display(), self.gid))?;
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove `{}`", self.socket.display())),
        }
        let listener = UnixListener::bind(&self.socket)
            .with_context(|| format!("cannot listen on `{}`", self.socket.display()))?;
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o660))
            .and_then(|()| chown(&self.socket, Some(0), Some(self.gid)))
            .with_context(|| format!("cannot give `{}` to group {}", self.socket.display(), self.gid))?;
        let broker = Arc::new(self);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let broker = Arc::clone(&broker);
                thread::spawn(move || {
                    if let Err(error) = broker.serve(stream) {
                        eprintln!("approval broker for {}: {error:#}", broker.sandbox);
                    }
                });
            }
        });
        Ok(())
    }

    fn serve(&self, mut client: UnixStream) -> Result<()> {
        let (head_bytes, rest) = match read_head(&mut client)? {
            Some(read) => read,
            None => return Ok(()),
        };
        let head = match parse_head(&head_bytes) {
            Ok(head) => head,
            Err(why) => return refuse(&mut client, 400, &why),
        };
        match classify(&head.method, &head.target) {
            Class::Pass => forward(client, &self.upstream, &head, rest),
            Class::Refuse(why) => {
                let what = format!("{} {}", head.method, shorten(&head.target));
                self.notifier
                    .audit("code.refused", &self.agent, &self.sandbox, &format!("{what}: {why}"))?;
                refuse(
                    &mut client,
                    403,
                    &format!("refused by the appliance's approval broker: {why}"),
                )
            }
            Class::Hold(action) => self.hold(client, &head, rest, action),
        }
    }

    /// Under a standing approval of this sandbox, forwards it at once
    /// (audited, no card). Otherwise saves the request, posts its card,
    /// waits; forwards it only when an
    /// admin approved it and the agent is still connected.
    fn hold(&self, mut client: UnixStream, head: &Head, mut rest: Vec<u8>, action: Action) -> Result<()> {
        if let Err(why) = read_body(&mut client, head, action, &mut rest) {
            return refuse(&mut client, 400, &why);
        }
        let what = describe(action, head, &rest);
        if let Some(standing) = self.shared.standing(&self.sandbox) {
            // An admin approved this sandbox's requests for a while
            // (`!approve c3 15m`): audited one by one, no card.
            self.notifier.audit(
                "approval.standing_used",
                &standing.by,
                &standing.id,
                &format!(
                    "{} in {}: {what}; standing until {}",
                    self.agent,
                    self.sandbox,
                    audit::rfc3339(standing.until)
                ),
            )?;
            return forward(client, &self.upstream, head, rest);
        }
        let (id, request) = self.shared.open(&self.agent, &self.sandbox, &what, self.timeout)?;
        self.notifier.audit(
            "approval.requested",
            &self.agent,
            &id,
            &format!("in {}: {what}", self.sandbox),
        )?;
        let card = format!(
            "code execution request {id}: {} wants to {what} in {}. `!approve {id}` or `!refuse {id}` (or react ✅ to approve it once, ❌ to refuse); refused if no admin decides by {}",
            self.agent,
            self.sandbox,
            audit::rfc3339(request.until)
        );
        let txn = format!("approval-{}-{id}-card", std::process::id());
        let posted = self
            .notifier
            .notice(&txn, &card)
            .and_then(|event| self.shared.set_card(&id, &event));
        if let Err(error) = posted {
            // Nobody can approve what nobody saw: refused now.
            self.refuse_unseen(&id)?;
            self.notifier
                .audit("approval.unposted", "warden", &id, &format!("{error:#}; refused"))?;
            return refuse(
                &mut client,
                403,
                &format!("code execution request {id} refused: the ops room could not be told"),
            );
        }
        let (decision, expired_here) = self.shared.wait(&id)?;
        match decision.outcome {
            Outcome::Approved if agent_gone(&mut client, &mut rest) => {
                self.notifier.audit(
                    "approval.unused",
                    &self.agent,
                    &id,
                    "approved, but the agent had hung up; not run",
                )?;
                Ok(())
            }
            Outcome::Approved => forward(client, &self.upstream, head, rest),
            Outcome::Refused => refuse(
                &mut client,
                403,
                &format!(
                    "code execution request {id} was refused by {} in the appliance's ops room",
                    decision.by
                ),
            ),
            Outcome::Expired => {
                if expired_here {
                    let detail = format!(
                        "{} in {}: {what}; no admin decided by {}",
                        self.agent,
                        self.sandbox,
                        audit::rfc3339(request.until)
                    );
                    self.notifier.audit("approval.expired", "warden", &id, &detail)?;
                    let txn = format!("approval-{}-{id}-expired", std::process::id());
                    let _ = self
                        .notifier
                        .notice(&txn, &format!("code execution request {id} expired, refused: {detail}"));
                }
                refuse(
                    &mut client,
                    403,
                    &format!("code execution request {id} expired: no admin of the appliance approved it in time"),
                )
            }
        }
    }

    /// Marks `id` refused by the warden (its card could not be posted).
    fn refuse_unseen(&self, id: &str) -> Result<()> {
        let mut inner = self.shared.lock();
        if let Some(request) = inner.approvals.requests.get_mut(id) {
            request.decision.get_or_insert(super::approvals::Decision {
                outcome: Outcome::Refused,
                by: "warden".to_string(),
                at: super::grants::unix_now(),
            });
        }
        inner.live.remove(id);
        self.shared.save(&inner)
    }
}

/// Reads until the end of the head: (head, what came after it). `None`:
/// the agent hung up first.
fn read_head(client: &mut UnixStream) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            return Ok(Some((buffer, rest)));
        }
        if buffer.len() > MAX_HEAD {
            refuse(client, 431, "request head too large")?;
            return Ok(None);
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// For a held create or exec: its JSON body, whole, for the card (`rest`
/// grows to `Content-Length`). A build's body is its context, left as is.
fn read_body(client: &mut UnixStream, head: &Head, action: Action, rest: &mut Vec<u8>) -> Result<(), String> {
    if head.header("Transfer-Encoding").is_some() && head.header("Content-Length").is_some() {
        return Err("both Transfer-Encoding and Content-Length".to_string());
    }
    if action == Action::Build {
        return Ok(());
    }
    let Some(length) = head.header("Content-Length") else {
        return Err("a request that runs code must carry its JSON body with a Content-Length".to_string());
    };
    let length: usize = length.parse().map_err(|_| "bad Content-Length".to_string())?;
    if length > MAX_BODY {
        return Err("the request body is larger than a container's configuration can be".to_string());
    }
    let mut chunk = [0u8; 8192];
    while rest.len() < length {
        let n = client.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the body ended early".to_string());
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// What the card says the agent wants: the image and command of a
/// container, the command of an exec, the tag and Dockerfile of a build;
/// every value escaped (no control character, no line break) and short.
pub fn describe(action: Action, head: &Head, body: &[u8]) -> String {
    let config: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let words = |field: &str| -> String {
        match config.get(field) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(" "),
            Some(Value::String(text)) => text.clone(),
            _ => String::new(),
        }
    };
    let command = [words("Entrypoint"), words("Cmd")]
        .into_iter()
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let command = if command.is_empty() {
        "the image's default command".to_string()
    } else {
        format!("`{}`", shorten(&command))
    };
    match action {
        Action::Create => format!(
            "create a container of image `{}` running {command}",
            shorten(config.get("Image").and_then(Value::as_str).unwrap_or("?"))
        ),
        Action::Exec => {
            let container = head.target.split('/').rev().nth(1).unwrap_or("?");
            format!("run {command} in container `{}`", shorten(container))
        }
        Action::Build => format!(
            "build an image (`{}`), running its Dockerfile's steps",
            shorten(head.target.split_once('?').map_or("", |(_, q)| q))
        ),
    }
}

/// At most [`MAX_SHOWN`] characters, escaped.
fn shorten(text: &str) -> String {
    let shown: String = text.escape_debug().to_string();
    if shown.chars().count() > MAX_SHOWN {
        format!("{}…", shown.chars().take(MAX_SHOWN).collect::<String>())
    } else {
        shown
    }
}

/// Whether the agent closed its end while waiting. What it sent meanwhile
/// (nothing, from the docker CLI) joins what is forwarded.
fn agent_gone(client: &mut UnixStream, rest: &mut Vec<u8>) -> bool {
    if client.set_nonblocking(true).is_err() {
        return true;
    }
    let mut chunk = [0u8; 8192];
    let gone = loop {
        // A build's context may be large: past this, the agent is still
        // sending, so it is there; the rest is copied when forwarded.
        if rest.len() >= MAX_BODY {
            break false;
        }
        match client.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
            Err(e) => break e.kind() != io::ErrorKind::WouldBlock,
        }
    };
    gone || client.set_nonblocking(false).is_err()
}

/// An HTTP error with Docker's JSON error body, which the CLI prints as
/// `Error response from daemon: <message>`.
fn refuse(client: &mut UnixStream, status: u16, message: &str) -> Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        431 => "Request Header Fields Too Large",
        _ => "Bad Gateway",
    };
    let body = json!({ "message": message }).to_string();
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(response.as_bytes())?;
    let _ = client.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// Sends the head (one request, then close) and what was read after it,
/// then copies both ways until either side ends.
fn forward(mut client: UnixStream, upstream: &Path, head: &Head, rest: Vec<u8>) -> Result<()> {
    let mut daemon = match UnixStream::connect(upstream) {
        Ok(daemon) => daemon,
        Err(error) => {
            return refuse(
                &mut client,
                502,
                &format!("the code sandbox's Docker is not answering ({error})"),
            );
        }
    };
    daemon.write_all(&head.upstream())?;
    daemon.write_all(&rest)?;
    let mut to_daemon = (client.try_clone()?, daemon.try_clone()?);
    let up = thread::spawn(move || {
        let _ = io::copy(&mut to_daemon.0, &mut to_daemon.1);
        let _ = to_daemon.1.shutdown(std::net::Shutdown::Write);
    });
    let _ = io::copy(&mut daemon, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = daemon.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_starts_code_is_held_and_the_rest_passes() {
        let held = [
            ("POST", "/containers/create", Action::Create),
            ("POST", "/v1.43/containers/create?name=x", Action::Create),
            ("POST", "/v1.41/containers/abc123/exec", Action::Exec),
            ("POST", "/containers/abc/exec", Action::Exec),
            // A legacy link's name (`/other/alias`) reaches the linked container.
            ("POST", "/v1.41/containers/other/alias/exec", Action::Exec),
            ("POST", "/v1.41/build?t=x", Action::Build),
            // Percent-encoding does not hide it from the classifier.
            ("POST", "/containers/%63reate", Action::Create),
            ("POST", "/containers%2Fcreate", Action::Create),
        ];
        for (method, target, action) in held {
            assert_eq!(classify(method, target), Class::Hold(action), "{method} {target}");
        }
        let passed = [
            ("GET", "/_ping"),
            ("HEAD", "/_ping"),
            ("GET", "/v1.41/version"),
            ("GET", "/v1.41/containers/json?all=1"),
            ("POST", "/v1.41/containers/abc/start"),
            ("POST", "/v1.41/containers/abc/attach?stream=1&stdout=1"),
            ("POST", "/v1.41/containers/abc/wait?condition=next-exit"),
            ("POST", "/v1.41/exec/def/start"),
            ("DELETE", "/v1.41/containers/abc?force=1"),
            ("GET", "/containers/create"),
            ("POST", "/images/create?fromImage=busybox"),
            // Reading files out of a container (`docker cp` from it) changes nothing.
            ("GET", "/v1.41/containers/abc/archive?path=/out"),
            ("HEAD", "/v1.41/containers/abc/archive?path=/out"),
        ];
        for (method, target) in passed {
            assert_eq!(classify(method, target), Class::Pass, "{method} {target}");
        }
    }

    #[test]
    fn odd_requests_and_other_ways_to_run_code_are_refused() {
        for (method, target) in [
            ("POST", "/grpc"),
            ("POST", "/v1.43/grpc"),
            ("POST", "/services/create"),
            ("POST", "/v1.41/plugins/pull?remote=x"),
            ("POST", "/swarm/init"),
            ("PUT", "/v1.41/containers/abc/archive?path=/usr/bin"),
            ("PUT", "/containers/abc/archive"),
            ("PUT", "/containers/other/alias/archive?path=/"),
            ("POST", "//containers/create"),
            ("POST", "/v1.41/../containers/create"),
            ("POST", "/containers/./create"),
            ("POST", "/containers/create/"),
            ("POST", "/containers%2F..%2Fcreate"),
            ("POST", "http://docker/containers/create"),
            ("POST", "/containers/%zz"),
            ("POST", "/containers\\create"),
            ("post", "/containers/create"),
            ("PATCH", "/containers/x"),
            ("CONNECT", "/"),
        ] {
            assert!(
                matches!(classify(method, target), Class::Refuse(_)),
                "{method} {target}"
            );
        }
    }

    #[test]
    fn one_request_per_connection_is_sent_upstream() {
        let head = parse_head(
            b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nContent-Length: 2",
        )
        .unwrap();
        let text = String::from_utf8(head.upstream()).unwrap();
        assert_eq!(
            text,
            "POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        let attach = parse_head(b"POST /containers/x/attach HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: tcp").unwrap();
        let text = String::from_utf8(attach.upstream()).unwrap();
        assert!(
            text.ends_with("Upgrade: tcp\r\nConnection: Upgrade, close\r\n\r\n"),
            "{text}"
        );
        for bad in [
            &b"POST /x HTTP/2\r\n"[..],
            b"POST  /x HTTP/1.1",
            b"POST /x HTTP/1.1\r\nConnection : close",
            b"POST /x HTTP/1.1\r\n folded",
            b"POST /x HTTP/1.1\r\nX: a\x00b",
        ] {
            assert!(parse_head(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_card_shows_image_and_command_escaped_and_short() {
        let head = parse_head(b"POST /v1.41/containers/create HTTP/1.1").unwrap();
        let body = br#"{"Image":"busybox","Cmd":["sh","-c","echo hi\n!approve c1"]}"#;
        let what = describe(Action::Create, &head, body);
        assert_eq!(
            what,
            "create a container of image `busybox` running `sh -c echo hi\\n!approve c1`"
        );
        let long = format!(r#"{{"Image":"x","Cmd":["{}"]}}"#, "a".repeat(1000));
        assert!(describe(Action::Create, &head, long.as_bytes()).chars().count() < 400);
        let exec = parse_head(b"POST /v1.41/containers/abc/exec HTTP/1.1").unwrap();
        assert_eq!(
            describe(Action::Exec, &exec, br#"{"Cmd":["id"]}"#),
            "run `id` in container `abc`"
        );
    }
}
