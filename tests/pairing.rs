//! Pairing over a real WireGuard link: three network namespaces this test
//! makes (the hub, the remote host `pi`, and an intruder), wireguard-go
//! (Debian `wireguard-go`) and `wg` (`wireguard-tools`), a real Synapse on
//! the hub's side with `appliance bootstrap`, `appliance pair-serve` on the
//! hub's overlay address with the generated server config, and
//! `appliance pair` on the remote host with the generated client config.
//! Ends with the remote agent's token valid on the hub's Synapse, asked
//! over the overlay; the intruder (another WireGuard peer of the hub, then
//! the same peer claiming the Pi's overlay address) and a process on the Pi
//! without the Pi's key get nothing; rotating the token on the hub and
//! pairing again replaces it on the same device.
//!
//! Only addresses inside the namespaces are used (192.0.2.0/24 and
//! 198.51.100.0/24 for the underlay, the overlay's 10.89.0.0/24); the
//! machine's own namespace gets no address and no interface.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use agent_appliance::on_host::bootstrap::client::Client;
use agent_appliance::on_host::pairing::{ClientConfig, ServerConfig};
use serde_json::json;

use crate::support::ports::free_port;
use crate::support::synapse::{Synapse, venv};
use crate::support::{assert_contains, require_tool, root, stderr, stdout};

const HUB: &str = "10.89.0.1";
const PI: &str = "10.89.0.2";
const INTRUDER: &str = "10.89.0.3";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("failed to run {program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        stderr(&output)
    );
    stdout(&output)
}

/// A WireGuard key pair from `wg genkey` / `wg pubkey`.
fn keypair() -> (String, String) {
    let private = ok("wg", &["genkey"]).trim().to_string();
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{private}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (private, String::from_utf8(out.stdout).unwrap().trim().to_string())
}

/// Runs `f` on a thread inside network namespace `ns`: the test's own
/// requests to overlay addresses leave from there, never from the machine.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = fs::File::open(&path).unwrap();
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// The namespaces, interfaces and processes of one run; all removed on drop.
struct Lab {
    namespaces: Vec<String>,
    /// wireguard-go's control sockets, named by interface (shared between
    /// namespaces, hence unique names).
    sockets: Vec<PathBuf>,
    children: Vec<Child>,
    synapse: Option<Synapse>,
    tag: String,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            namespaces: Vec::new(),
            sockets: Vec::new(),
            children: Vec::new(),
            synapse: None,
            tag: format!("{}", std::process::id() % 1_000_000),
        }
    }

    fn ns(&self, role: &str) -> String {
        format!("pair-{role}-{}", self.tag)
    }

    fn wg(&self, role: &str) -> String {
        format!("pwg{}{}", self.tag, &role[..1])
    }

    fn add_netns(&mut self, role: &str) {
        let ns = self.ns(role);
        ok("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ok("ip", &["-n", &ns, "link", "set", "lo", "up"]);
    }

    /// A veth pair made directly inside the two namespaces.
    fn underlay(&self, a: &str, a_addr: &str, b: &str, b_addr: &str) {
        let (na, nb) = (self.ns(a), self.ns(b));
        let (ia, ib) = (format!("u-{b}"), format!("u-{a}"));
        ok(
            "ip",
            &[
                "link", "add", &ia, "netns", &na, "type", "veth", "peer", "name", &ib, "netns", &nb,
            ],
        );
        for (ns, iface, addr) in [(&na, &ia, a_addr), (&nb, &ib, b_addr)] {
            ok("ip", &["-n", ns, "addr", "add", addr, "dev", iface]);
            ok("ip", &["-n", ns, "link", "set", iface, "up"]);
        }
    }

    /// A wireguard-go interface in `role`'s namespace with `address`.
    fn wireguard(&mut self, role: &str, address: &str, private_key: &Path, wg_args: &[&str]) {
        let (ns, iface) = (self.ns(role), self.wg(role));
        let child = Command::new("ip")
            .args(["netns", "exec", &ns, "wireguard-go", "-f", &iface])
            // wireguard-go refuses to run where the kernel has WireGuard
            // unless told; the test wants the userspace one, which needs no
            // module.
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to start wireguard-go");
        self.children.push(child);
        self.sockets
            .push(PathBuf::from(format!("/var/run/wireguard/{iface}.sock")));
        let started = Instant::now();
        while !run("ip", &["-n", &ns, "link", "show", &iface]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "wireguard-go made no {iface}"
            );
            sleep(Duration::from_millis(50));
        }
        let key = private_key.to_str().unwrap();
        let mut args = vec!["netns", "exec", &ns, "wg", "set", &iface, "private-key", key];
        args.extend_from_slice(wg_args);
        ok("ip", &args);
        ok(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{address}/24"), "dev", &iface],
        );
        ok("ip", &["-n", &ns, "link", "set", &iface, "up"]);
    }

    /// `appliance ARGS` inside `role`'s namespace.
    fn appliance(&self, role: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns(role), env!("CARGO_BIN_EXE_appliance")])
            .args(args);
        command
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.synapse.take();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        for socket in &self.sockets {
            let _ = fs::remove_file(socket);
        }
    }
}

/// Root, `ip`, `wg`, `wireguard-go` and Synapse, or a loud skip (a failure
/// in CI).
fn prerequisites() -> Option<PathBuf> {
    if !crate::support::require_root("the pairing test makes network namespaces") {
        return None;
    }
    for (tool, why) in [
        ("ip", "Debian `iproute2`: network namespaces"),
        ("wg", "Debian `wireguard-tools`: configures the WireGuard link"),
        (
            "wireguard-go",
            "Debian `wireguard-go`: WireGuard without a kernel module",
        ),
    ] {
        require_tool(tool, why)?;
    }
    venv()
}

fn write_key(dir: &Path, name: &str, key: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("{key}\n")).unwrap();
    path
}

fn whoami(lab: &Lab, role: &str, url: String, token: String) -> (u16, serde_json::Value) {
    in_netns(&lab.ns(role), move || {
        let client = Client::new(&url, Instant::now() + Duration::from_secs(20), Duration::from_secs(20));
        let reply = client.get("/_matrix/client/v3/account/whoami", Some(&token)).unwrap();
        (reply.status, reply.body)
    })
}

fn pair(lab: &Lab, role: &str, config: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["pair", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    lab.appliance(role, &args).output().unwrap()
}

/// The arguments of a pairing that gives up after 2 s, as a peer holding
/// the private key in `key`, its state in `state`.
fn as_peer<'a>(key: &'a Path, state: &'a Path) -> [&'a str; 6] {
    let (key, state) = (key.to_str().unwrap(), state.to_str().unwrap());
    ["--timeout", "2", "--private-key", key, "--state-dir", state]
}

#[test]
fn a_remote_host_gets_its_agents_credentials_over_wireguard_and_no_one_else_does() {
    let Some(venv) = prerequisites() else { return };
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let mut lab = Lab::new();
    for role in ["hub", "pi", "intruder"] {
        lab.add_netns(role);
    }
    lab.underlay("hub", "192.0.2.1/24", "pi", "192.0.2.2/24");
    lab.underlay("hub", "198.51.100.1/24", "intruder", "198.51.100.2/24");

    let (hub_private, hub_public) = keypair();
    let (pi_private, pi_public) = keypair();
    let (intruder_private, intruder_public) = keypair();
    let hub_key = write_key(dir, "hub.key", &hub_private);
    let pi_key = write_key(dir, "pi.key", &pi_private);
    let intruder_key = write_key(dir, "intruder.key", &intruder_private);
    // The intruder is a WireGuard peer of the hub too (as an admin's laptop
    // would be), with its own overlay address.
    lab.wireguard(
        "hub",
        HUB,
        &hub_key,
        &[
            "listen-port",
            "51820",
            "peer",
            &pi_public,
            "allowed-ips",
            &format!("{PI}/32"),
            "peer",
            &intruder_public,
            "allowed-ips",
            &format!("{INTRUDER}/32"),
        ],
    );
    lab.wireguard(
        "pi",
        PI,
        &pi_key,
        &[
            "peer",
            &hub_public,
            "allowed-ips",
            &format!("{HUB}/32"),
            "endpoint",
            "192.0.2.1:51820",
        ],
    );
    lab.wireguard(
        "intruder",
        INTRUDER,
        &intruder_key,
        &[
            "peer",
            &hub_public,
            "allowed-ips",
            &format!("{HUB}/32"),
            "endpoint",
            "198.51.100.1:51820",
        ],
    );

    // The hub: secrets, Synapse on loopback and its overlay address, bootstrap.
    let hub_state = dir.join("hub-state");
    let plan = root().join("generated/bootstrap/plan.json");
    let plan = plan.to_str().unwrap();
    let hub_state_arg = hub_state.to_str().unwrap();
    let port = free_port();
    let loopback = format!("http://127.0.0.1:{port}");
    let hub_args = [
        "bootstrap",
        "--plan",
        plan,
        "--state-dir",
        hub_state_arg,
        "--homeserver",
        &loopback,
    ];
    let bootstrap = |lab: &Lab, extra: &[&str]| {
        let mut args = hub_args.to_vec();
        args.extend_from_slice(extra);
        let output = lab.appliance("hub", &args).output().unwrap();
        assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
        stdout(&output)
    };
    bootstrap(&lab, &["--secrets-only"]);
    let hub_ns = lab.ns("hub");
    lab.synapse = Some(Synapse::start_with(
        &venv,
        &dir.join("synapse"),
        &hub_state,
        port,
        &["ip", "netns", "exec", &hub_ns],
        &["127.0.0.1", HUB],
    ));
    bootstrap(&lab, &["--timeout", "90"]);

    // The generated configs, with this run's keys and directories.
    let mut server: ServerConfig =
        agent_appliance::on_host::pairing::load(&root().join("generated/hosts/hub/pairing-server.json")).unwrap();
    assert_eq!(server.listen.to_string(), format!("{HUB}:8009"));
    server.state_dir = hub_state_arg.to_string();
    server.private_key_file = hub_key.display().to_string();
    server.peers.get_mut(&PI.parse().unwrap()).unwrap().public_key = Some(pi_public.clone());
    let server_path = dir.join("pairing-server.json");
    fs::write(&server_path, serde_json::to_string(&server).unwrap()).unwrap();
    let mut client: ClientConfig =
        agent_appliance::on_host::pairing::load(&root().join("generated/hosts/pi/pairing.json")).unwrap();
    let pi_state = dir.join("pi-state");
    client.hub_public_key = Some(hub_public.clone());
    client.state_dir = pi_state.display().to_string();
    client.private_key_file = pi_key.display().to_string();
    let client_path = dir.join("pairing.json");
    fs::write(&client_path, serde_json::to_string(&client).unwrap()).unwrap();

    let server_log = fs::File::create(dir.join("pair-serve.log")).unwrap();
    let child = lab
        .appliance("hub", &["pair-serve", "--config", server_path.to_str().unwrap()])
        .stdout(server_log.try_clone().unwrap())
        .stderr(server_log)
        .spawn()
        .unwrap();
    lab.children.push(child);

    // The Pi pairs: its agent's files arrive, 0400 for the agent, equal to the hub's.
    let output = pair(&lab, "pi", &client_path, &["--timeout", "60"]);
    assert!(output.status.success(), "{}{}", stdout(&output), stderr(&output));
    assert_contains(stdout(&output), "balthasar-pi: wrote env, matrix-token");
    let agent = &client.agents["balthasar-pi"];
    let pi_dir = pi_state.join(&agent.secrets_dir);
    let hub_dir = hub_state.join(&agent.secrets_dir);
    for name in ["env", "matrix-token"] {
        let meta = fs::metadata(pi_dir.join(name)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o400, "{name}");
        assert_eq!((meta.uid(), meta.gid()), (agent.uid, agent.gid), "{name}");
        assert_eq!(
            fs::read(pi_dir.join(name)).unwrap(),
            fs::read(hub_dir.join(name)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(fs::metadata(&pi_dir).unwrap().mode() & 0o777, 0o700);
    let token = fs::read_to_string(pi_dir.join("matrix-token"))
        .unwrap()
        .trim()
        .to_string();
    assert!(!stdout(&output).contains(&token), "the token was printed");

    // The token works on the hub's Synapse, asked from the Pi over the overlay.
    let overlay_url = format!("http://{HUB}:{port}");
    let (status, body) = whoami(&lab, "pi", overlay_url.clone(), token.clone());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], json!("@balthasar-pi:magi"));
    assert_eq!(body["device_id"], json!("APPLIANCE_BALTHASAR_PI"));

    // A rerun changes nothing.
    let output = pair(&lab, "pi", &client_path, &["--timeout", "30"]);
    assert_contains(stdout(&output), "balthasar-pi: secrets unchanged");

    // A process on the Pi without the Pi's key (as one of its sandboxes
    // would be: their traffic leaves masqueraded to the Pi's address).
    let (stranger_private, _) = keypair();
    let stranger_key = write_key(dir, "stranger.key", &stranger_private);
    let stranger_state = dir.join("stranger-state");
    let output = pair(&lab, "pi", &client_path, &as_peer(&stranger_key, &stranger_state));
    assert!(!output.status.success());
    assert_contains(stderr(&output), "the proof does not match");
    assert!(!stranger_state.join(&agent.secrets_dir).join("env").exists());

    // The intruder, a peer of the hub from its own overlay address, with its
    // own key and the Pi's config.
    let intruder_state = dir.join("intruder-state");
    let intruder_args = as_peer(&intruder_key, &intruder_state);
    let output = pair(&lab, "intruder", &client_path, &intruder_args);
    assert!(!output.status.success());
    assert_contains(
        stderr(&output),
        format!("no host of this appliance has the overlay address {INTRUDER}"),
    );
    // The same intruder taking the Pi's overlay address: the hub's
    // WireGuard drops its packets (that address belongs to the Pi's key),
    // so it cannot even connect.
    let intruder_ns = lab.ns("intruder");
    let intruder_wg = lab.wg("intruder");
    ok("ip", &["-n", &intruder_ns, "addr", "flush", "dev", &intruder_wg]);
    ok(
        "ip",
        &[
            "-n",
            &intruder_ns,
            "addr",
            "add",
            &format!("{PI}/24"),
            "dev",
            &intruder_wg,
        ],
    );
    let output = pair(&lab, "intruder", &client_path, &intruder_args);
    assert!(!output.status.success());
    assert_contains(stderr(&output), "failed to connect");
    assert!(!intruder_state.join(&agent.secrets_dir).join("env").exists());
    let synapse_on_overlay: std::net::SocketAddr = format!("{HUB}:{port}").parse().unwrap();
    let reached = in_netns(&intruder_ns, move || {
        std::net::TcpStream::connect_timeout(&synapse_on_overlay, Duration::from_secs(3)).is_ok()
    });
    assert!(!reached, "the intruder reached the hub with the Pi's overlay address");

    // Rotation: the hub revokes the token, bootstrap repairs it on the same
    // device, pairing again replaces it on the Pi.
    let logout = in_netns(&lab.ns("pi"), {
        let (url, token) = (overlay_url.clone(), token.clone());
        move || {
            let client = Client::new(&url, Instant::now() + Duration::from_secs(20), Duration::from_secs(20));
            client
                .post("/_matrix/client/v3/logout", Some(&token), &json!({}))
                .unwrap()
                .status
        }
    });
    assert_eq!(logout, 200);
    let repaired = bootstrap(&lab, &[]);
    assert_contains(&repaired, "@balthasar-pi:magi: repaired");
    let output = pair(&lab, "pi", &client_path, &["--timeout", "30"]);
    assert_contains(stdout(&output), "balthasar-pi: wrote env, matrix-token");
    let rotated = fs::read_to_string(pi_dir.join("matrix-token"))
        .unwrap()
        .trim()
        .to_string();
    assert_ne!(rotated, token);
    let (status, body) = whoami(&lab, "pi", overlay_url.clone(), rotated);
    assert_eq!(
        (status, body["device_id"].clone()),
        (200, json!("APPLIANCE_BALTHASAR_PI"))
    );
    let (status, _) = whoami(&lab, "pi", overlay_url, token);
    assert_eq!(status, 401);

    let log = fs::read_to_string(dir.join("pair-serve.log")).unwrap();
    assert_contains(&log, format!("{PI}: host `pi`: handed balthasar-pi"));
    assert_contains(&log, format!("{INTRUDER}: refused"));
}

/// A host's pairing unit, as modules/pairing.nix makes it from the host's
/// generated values, evaluated with stub `lib`, `pkgs` and `utils`.
fn pairing_unit(host: &str, unit: &str) -> serde_json::Value {
    crate::support::eval_json(&format!(
        r#"
let
  lib = {{
    mkIf = cond: content: {{ inherit cond content; }}; mkDefault = value: value; getExe = p: "/bin/${{p}}";
    types = {{ listOf = t: t; strMatching = r: r; path = "path"; }};
    mkOption = o: o; mkEnableOption = d: d; mkPackageOption = _: _: _: {{ }}; literalExpression = e: e;
  }};
  generated = (import {loader} {tree}).hosts.{host}.module {{ config.appliance = {{ enable = true; host = "{host}"; }}; inherit lib; pkgs = {{ }}; }};
  pairing = generated.config.content.appliance.pairing;
  module = import {module} {{
    config.appliance.pairing = pairing // {{ package = "appliance"; }};
    inherit lib;
    pkgs = {{ }};
    utils.escapeSystemdExecArgs = args: args;
  }};
  service = module.config.systemd.services.{unit};
in {{ enabled = generated.config.cond && service.cond; unit = service.content; }}"#,
        loader = root().join("nix/generated.nix").display(),
        tree = root().join("generated").display(),
        module = root().join("modules/pairing.nix").display(),
    ))
}

#[test]
fn the_generated_units_run_pairing_on_both_sides_before_the_agents() {
    if crate::support::nix_instantiate().is_none() {
        return;
    }
    let server = pairing_unit("hub", "appliance-pairing");
    assert_eq!(server["enabled"], json!(true));
    let exec = server["unit"]["serviceConfig"]["ExecStart"].as_array().unwrap();
    assert_eq!(
        &exec[..3],
        &[json!("/bin/appliance"), json!("pair-serve"), json!("--config")]
    );
    assert!(exec[3].as_str().unwrap().ends_with("-pairing-server.json"), "{exec:?}");
    assert_eq!(server["unit"]["serviceConfig"]["Restart"], json!("always"));
    let after = server["unit"]["after"].to_string();
    assert!(
        after.contains("appliance-bootstrap.service") && after.contains("wg\\\\x2dappliance"),
        "{after}"
    );

    let client = pairing_unit("pi", "appliance-pair");
    assert_eq!(client["enabled"], json!(true));
    let exec = client["unit"]["serviceConfig"]["ExecStart"].as_array().unwrap();
    assert_eq!(&exec[..3], &[json!("/bin/appliance"), json!("pair"), json!("--config")]);
    assert!(exec[3].as_str().unwrap().ends_with("-pairing.json"), "{exec:?}");
    assert_eq!(client["unit"]["before"], json!(["docker-balthasar-pi.service"]));
    assert_eq!(client["unit"]["serviceConfig"]["Restart"], json!("on-failure"));
    assert_eq!(client["unit"]["serviceConfig"]["Type"], json!("oneshot"));

    // The configs they read carry no secret: public keys and paths only.
    for file in ["hub/pairing-server.json", "pi/pairing.json"] {
        let text = fs::read_to_string(root().join("generated/hosts").join(file)).unwrap();
        for word in ["token", "password", "secret\""] {
            assert!(!text.contains(word), "{file} mentions {word}");
        }
    }
}

/// Kills a child process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same exchange on loopback (no root, no WireGuard): a peer is
/// refused until the hub's bootstrap has written its agent's files, then
/// gets exactly them; another key at the same address gets nothing.
#[test]
fn pairing_on_loopback_waits_for_bootstrap_and_checks_the_key() {
    if require_tool("wg", "Debian `wireguard-tools`: makes the test's keys").is_none() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let (hub_private, hub_public) = keypair();
    let (peer_private, peer_public) = keypair();
    let (other_private, _) = keypair();
    let port = free_port();
    let hub_state = dir.join("hub");
    let peer_state = dir.join("peer");
    let mut server: ServerConfig =
        agent_appliance::on_host::pairing::load(&root().join("generated/hosts/hub/pairing-server.json")).unwrap();
    let mut peer = server.peers.values().next().unwrap().clone();
    peer.public_key = Some(peer_public);
    server.peers = [("127.0.0.1".parse().unwrap(), peer)].into_iter().collect();
    server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    server.state_dir = hub_state.display().to_string();
    server.private_key_file = write_key(dir, "hub.key", &hub_private).display().to_string();
    let server_path = dir.join("server.json");
    fs::write(&server_path, serde_json::to_string(&server).unwrap()).unwrap();
    let mut client: ClientConfig =
        agent_appliance::on_host::pairing::load(&root().join("generated/hosts/pi/pairing.json")).unwrap();
    client.hub = server.listen;
    client.hub_public_key = Some(hub_public);
    client.state_dir = peer_state.display().to_string();
    client.private_key_file = write_key(dir, "peer.key", &peer_private).display().to_string();
    // Owned by whoever runs the test, so it also runs unprivileged.
    for agent in client.agents.values_mut() {
        agent.uid = rustix::process::geteuid().as_raw();
        agent.gid = rustix::process::getegid().as_raw();
    }
    let client_path = dir.join("client.json");
    fs::write(&client_path, serde_json::to_string(&client).unwrap()).unwrap();

    let _server = Killed(
        crate::support::appliance()
            .args(["pair-serve", "--config", server_path.to_str().unwrap()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pair = |extra: &[&str]| {
        crate::support::appliance()
            .args(["pair", "--config", client_path.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };

    // Before bootstrap: refused, retried, nothing written.
    let early = pair(&["--timeout", "2"]);
    assert!(!early.status.success());
    assert_contains(stderr(&early), "not ready on the hub");
    let agent = &client.agents["balthasar-pi"];
    assert!(!peer_state.join(&agent.secrets_dir).join("env").exists());

    // Once the hub has the files, the peer gets exactly them.
    let hub_dir = hub_state.join(&agent.secrets_dir);
    fs::create_dir_all(&hub_dir).unwrap();
    fs::write(hub_dir.join("env"), "PICOCLAW_CHANNELS_MATRIX_ACCESS_TOKEN=t0k3n\n").unwrap();
    fs::write(hub_dir.join("matrix-token"), "t0k3n").unwrap();
    fs::write(hub_dir.join("unrelated"), "not handed").unwrap();
    let paired = pair(&["--timeout", "10"]);
    assert!(paired.status.success(), "{}", stderr(&paired));
    let peer_dir = peer_state.join(&agent.secrets_dir);
    assert_eq!(fs::read_to_string(peer_dir.join("matrix-token")).unwrap(), "t0k3n");
    assert!(!peer_dir.join("unrelated").exists());
    assert!(!stdout(&paired).contains("t0k3n"));

    // Another key at the same address gets nothing.
    let other = write_key(dir, "other.key", &other_private);
    let refused = pair(&["--timeout", "1", "--private-key", other.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert_contains(stderr(&refused), "the proof does not match");
    assert!(!stderr(&refused).contains("t0k3n"));
}
