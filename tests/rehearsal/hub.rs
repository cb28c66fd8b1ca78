//! The hub of the default spec, brought up as the NixOS host module would,
//! inside a network namespace of its own (docs/rehearsal.md lists every
//! substitution and why):
//! a private dockerd fed the generated daemon settings, the generated
//! `appliance` bridge, the DNS forwarder on the bridge address, Synapse
//! with the generated settings, `appliance bootstrap --secrets-only` then
//! the full bootstrap, the stand-in model server on the generated inference
//! address, and every sandbox of host `hub` with its generated `docker run`
//! options.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use agent_appliance::common::grants::GRANTS_DIR;
use agent_appliance::generator::model::credentials;
use agent_appliance::generator::model::{
    Appliance, BindSource, Host, OVERLAY_INTERFACE, SOCKET_DIR_MODE, STATE_DIR, Sandbox, is_socket_dir,
};
use agent_appliance::generator::render::runtimes::daemon_settings;
use agent_appliance::generator::runsc::{RunscVersion, probe_binary};
use agent_appliance::on_host::bootstrap::client::Client;
use serde_json::Value;

use crate::support::dockerd::Dockerd;
use crate::support::netns::Netns;
use crate::support::squid;
use crate::support::synapse::Synapse;
use crate::support::{in_ci, root};

/// The test web host's name, which the DNS forwarder answers for.
pub const WEB_HOST: &str = "web.rehearsal.test";
/// The test web host's address: "the internet". Globally routable, so the
/// egress proxy's deny list and the agents' own private-address checks
/// (Hermes' `is_private`, which counts documentation addresses as private)
/// treat it as public, unmodified: an address of the AS112 block
/// 192.31.196.0/24 (RFC 7534, an anycast sink for reverse DNS, which serves
/// no web site). It exists only on the namespace's loopback, and the
/// namespace has no route out, so nothing sent to it can leave.
pub const WEB_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 31, 196, 80);
/// The GitHub API's name, which "the internet's DNS" resolves to the test
/// web host's address, where the stand-in GitHub API serves HTTPS
/// (tests/rehearsal/github_standin.py) with a certificate of a test CA.
pub const GITHUB_API: &str = "api.github.com";
/// A public-looking name outside every allowlist, which "the internet's
/// DNS" resolves to the test web host's address, where the stand-in GitHub
/// API's certificate covers it too: what balthasar is granted from the room
/// (`web.rehearsal.test` cannot be: `.test` never names a public host).
/// `example.org` is reserved for documentation (RFC 2606); nothing here
/// resolves it beyond the namespace.
pub const GRANT_HOST: &str = "docs.example.org";
/// A name that resolves to a private address: a grant for it opens nothing,
/// as the proxy refuses private destinations first.
pub const PRIVATE_GRANT_HOST: &str = "intranet.example.org";
const PRIVATE_GRANT_ADDRESS: &str = "10.99.0.1";
/// The account the stand-in GitHub API answers `GET /user` with.
pub const GITHUB_LOGIN: &str = "rehearsal-octocat";
/// A web port: the egress proxy allows ports 80 and 443 only.
pub const WEB_PORT: u16 = 80;
pub const WEB_TITLE: &str = "Rehearsal test page 7f3a";

/// `http://web.rehearsal.test/<path>`: a page of the test web host.
pub fn web_url(path: &str) -> String {
    format!("http://{WEB_HOST}/{path}")
}

/// A process we started, killed when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> Process {
        let out = fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            name: name.into(),
            child,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        crate::support::stop_child(&mut self.child, rustix::process::Signal::TERM, Duration::from_secs(10));
    }
}

/// The running hub. Field order is drop order: containers and the daemon
/// first, then the services, then the namespace, then the files.
pub struct Hub {
    pub daemon: Dockerd,
    pub services: Vec<Process>,
    pub synapse: Option<Synapse>,
    pub netns: Netns,
    /// "The internet": the test web host and its DNS server, one veth hop
    /// from the hub's namespace (`connect_internet`).
    pub internet: Netns,
    pub appliance: Appliance,
    /// Where the spec (`appliance.toml`) and its generated tree
    /// (`generated/`) are: the repository's, unless the bench runs its own
    /// (`start_from`).
    pub spec_dir: PathBuf,
    /// Stands in for `/`: every host path of the appliance is below it.
    pub host_root: tempfile::TempDir,
}

/// The generated daemon settings of `host`, spelled for the installed runsc
/// by the library's table (`runsc::probe_binary`, as `appliance doctor`
/// does). With a current runsc (the release the images ship, built by
/// .ci/gobuild.sh) the sandboxes use gVisor's own network stack, exactly as
/// generated. runsc 20240729 cannot run its netstack here (it takes any
/// network namespace with /proc/sys/net/core/rmem_default for the root one:
/// "cannot run with network enabled in root network namespace"), so with it
/// each runtime gets one addition:
/// - `--network=host` where a sandbox of the runtime is on the bridge: the
///   sandbox then uses its container's network namespace through the host
///   kernel;
/// - `--network=none` where no sandbox of the runtime has a network (the
///   code sandbox): netstack with loopback only, which runs here and, unlike
///   host networking, lets the inner runc create network namespaces
///   (under `--network=host` it fails: "protocol not supported").
pub fn daemon_json(host: &Host) -> Value {
    let (version, listing) = probe_binary(Path::new("runsc")).expect("runsc runs");
    eprintln!(
        "rehearsal: runsc {version}: {}",
        if version == RunscVersion::Current {
            "gVisor's netstack, as generated"
        } else {
            "--network=host for the bridged runtimes (this runsc's netstack cannot run here)"
        }
    );
    let settings = daemon_settings(host, version).expect("the hub's runtimes spell for the installed runsc");
    let mut settings = serde_json::to_value(settings).unwrap();
    for (name, runtime) in settings["runtimes"].as_object_mut().unwrap() {
        let networked = host.sandboxes.iter().any(|s| &s.runtime == name && s.network.is_some());
        let unused = !host.sandboxes.iter().any(|s| &s.runtime == name);
        let args = runtime["runtimeArgs"].as_array_mut().unwrap();
        // No GPU here: the inference sandbox's runtime runs minus nvproxy.
        args.retain(|a| !a.as_str().unwrap_or_default().starts_with("--nvproxy"));
        for arg in args.iter() {
            let name = arg.as_str().unwrap().trim_start_matches('-');
            let name = name.split('=').next().unwrap();
            assert!(
                listing.names.contains(name),
                "the installed runsc has no `{name}`, which the generated settings use for {version}"
            );
        }
        if version == RunscVersion::Current {
            continue;
        }
        let network = if networked || unused {
            "--network=host"
        } else {
            "--network=none"
        };
        args.push(network.into());
    }
    settings
}

impl Hub {
    /// A path of the appliance's host filesystem, below the temp root.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.host_root.path().join(path.trim_start_matches('/'))
    }

    pub fn hub(&self) -> &Host {
        &self.appliance.hosts["hub"]
    }

    pub fn state_dir(&self) -> PathBuf {
        self.host_path(STATE_DIR)
    }

    /// The generated tree, as committed for the repository's spec.
    pub fn generated(&self) -> PathBuf {
        self.spec_dir.join("generated")
    }

    /// The generated bootstrap plan.
    pub fn plan_path(&self) -> PathBuf {
        self.generated().join("bootstrap/plan.json")
    }

    /// `appliance bootstrap` with the generated plan and the re-rooted state
    /// dir, inside the namespace (the plan's homeserver is 127.0.0.1:8008).
    pub fn bootstrap(&self, extra: &[&str]) -> Output {
        let mut command = self.netns.command(env!("CARGO_BIN_EXE_appliance"));
        command
            .arg("bootstrap")
            .arg("--plan")
            .arg(self.plan_path())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(extra);
        command.output().expect("failed to run appliance bootstrap")
    }

    /// The admin's initial password, as the operator gets it.
    pub fn admin_password(&self, admin: &str) -> String {
        let output = crate::support::appliance()
            .args(["admin", "password", admin, "--plan"])
            .arg(self.plan_path())
            .arg("--state-dir")
            .arg(self.state_dir())
            .output()
            .expect("failed to run appliance admin password");
        assert_ok("appliance admin password", &output);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The generated `docker run` arguments of `sandbox`, with host paths
    /// below the temp root and generated files from the spec's generated tree (`Hub::generated`):
    /// nothing else is changed.
    pub fn run_args(&self, sandbox: &Sandbox) -> Vec<String> {
        crate::support::lab::rerooted_run_args(sandbox, &self.generated(), |path| self.host_path(path))
    }

    /// The name of the sandbox Ollama (here the stand-in) runs in.
    pub fn inference_sandbox(&self) -> &str {
        let inference = self
            .appliance
            .inference
            .as_ref()
            .expect("the default spec has inference");
        inference.sandbox.as_deref().expect("Ollama runs in its sandbox")
    }

    /// The stand-in's request log, in the inference sandbox's model volume.
    pub fn standin_log(&self) -> String {
        let sandbox = self.inference_sandbox();
        let output = self
            .daemon
            .docker(&["exec", sandbox, "cat", "/var/lib/ollama/standin-requests.jsonl"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The stand-in's request log as a host path (scenario.py reads it):
    /// the file in the inference sandbox's volume, through its mountpoint.
    pub fn standin_log_path(&self) -> std::path::PathBuf {
        let name = self.inference_sandbox();
        let (_, sandbox) = self.appliance.sandbox(name).expect("the inference sandbox exists");
        let volume = sandbox
            .volumes
            .iter()
            .find(|v| v.target == "/var/lib/ollama")
            .expect("the inference sandbox keeps /var/lib/ollama in a volume");
        let output = self
            .daemon
            .docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", &volume.name]);
        let mountpoint = String::from_utf8_lossy(&output.stdout).trim().to_string();
        std::path::Path::new(&mountpoint).join("standin-requests.jsonl")
    }

    /// `docker run -d --name NAME <generated options> IMAGE <command>`.
    pub fn start_sandbox(&self, sandbox: &Sandbox) {
        let mut args = vec!["run".to_string(), "-d".into(), format!("--name={}", sandbox.name)];
        args.extend(self.run_args(sandbox));
        args.push(sandbox.image.clone());
        args.extend(sandbox.command.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.daemon.docker(&refs);
        assert!(
            output.status.success(),
            "docker {}:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("rehearsal: started {}", sandbox.name);
    }

    pub fn is_running(&self, name: &str) -> bool {
        let state = self.daemon.docker(&["inspect", "-f", "{{.State.Running}}", name]);
        String::from_utf8_lossy(&state.stdout).trim() == "true"
    }

    /// The container's state and its last log lines, for failure messages.
    pub fn container_report(&self, name: &str) -> String {
        let state = self.daemon.docker(&["inspect", "-f", "{{json .State}}", name]);
        let logs = self.daemon.docker(&["logs", "--tail", "80", name]);
        format!(
            "--- container {name}: {}\n{}{}",
            String::from_utf8_lossy(&state.stdout).trim(),
            String::from_utf8_lossy(&logs.stdout),
            String::from_utf8_lossy(&logs.stderr)
        )
    }

    /// Every container's report, the inner dockerd's containers and the
    /// tail of the stand-in's request log.
    pub fn all_reports(&self) -> String {
        let mut out: Vec<String> = self
            .sandboxes()
            .iter()
            .map(|s| self.container_report(&s.name))
            .collect();
        for sandbox in self.sandboxes().iter().filter(|s| s.profile.docker_in_gvisor) {
            let inner = self.daemon.docker(&["exec", &sandbox.name, "sh", "-c", "docker images; docker ps -a; for c in $(docker ps -aq | head -3); do docker inspect -f '{{json .State}} {{json .HostConfig.Binds}}' $c; docker logs --tail 20 $c 2>&1; done; echo '--- probe: docker run --network=none code-runner'; docker run --rm --network=none --tmpfs /workspace:rw,exec,size=10m agent-appliance/code-runner:1 python3 -c 'print(42)' 2>&1"]);
            out.push(format!(
                "--- inner dockerd of {}:\n{}{}",
                sandbox.name,
                String::from_utf8_lossy(&inner.stdout),
                String::from_utf8_lossy(&inner.stderr)
            ));
        }
        let log = self.standin_log();
        let lines: Vec<&str> = log.lines().collect();
        let tail: Vec<String> = lines[lines.len().saturating_sub(6)..]
            .iter()
            .map(|l| l.chars().take(1500).collect())
            .collect();
        out.push(format!(
            "--- stand-in request log (last {}):\n{}",
            tail.len(),
            tail.join("\n")
        ));
        out.join("\n")
    }

    /// The hub's sandboxes, every one of them. A developer
    /// may narrow them with `APPLIANCE_REHEARSAL_ONLY=casper,casper-exec`
    /// (refused in CI, where the whole hub runs).
    pub fn sandboxes(&self) -> Vec<Sandbox> {
        let only: Option<Vec<String>> = std::env::var("APPLIANCE_REHEARSAL_ONLY")
            .ok()
            .map(|v| v.split(',').map(String::from).collect());
        assert!(
            only.is_none() || !in_ci(),
            "APPLIANCE_REHEARSAL_ONLY is for development; CI runs every sandbox"
        );
        self.hub()
            .sandboxes
            .iter()
            .filter(|s| only.as_ref().is_none_or(|o| o.contains(&s.name)))
            .cloned()
            .collect()
    }

    pub fn client(&self) -> Client {
        Client::new(
            "http://127.0.0.1:8008",
            Instant::now() + Duration::from_secs(30),
            Duration::from_secs(30),
        )
    }
}

/// Host directories the NixOS module's tmpfiles rules create: the socket
/// directory of each code sandbox, root and the consuming agent's group.
fn tmpfiles(hub: &Hub) {
    service_secrets(hub);
    // As the generated `appliance.directories` say (src/generator/render/host.rs):
    // a socket directory an agent mounts is root's and the agent's group's
    // (0750); one only its code sandbox mounts (the approval broker, the
    // warden as root, stands between them) is root's alone (0700).
    let sandboxes = hub.sandboxes();
    let socket_dir = |source: &BindSource| match source {
        BindSource::Host(path) if is_socket_dir(path) => Some(path.clone()),
        _ => None,
    };
    let mut consumed = Vec::new();
    for sandbox in &sandboxes {
        for bind in sandbox.binds.iter().filter(|b| b.read_only) {
            let Some(path) = socket_dir(&bind.source) else { continue };
            let dir = hub.host_path(&path);
            fs::create_dir_all(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(SOCKET_DIR_MODE)).unwrap();
            let gid: u32 = sandbox.user.split_once(':').unwrap().1.parse().unwrap();
            chown(&dir, Some(0), Some(gid)).unwrap();
            consumed.push(path);
        }
    }
    for sandbox in &sandboxes {
        for bind in sandbox.binds.iter().filter(|b| !b.read_only) {
            let Some(path) = socket_dir(&bind.source) else { continue };
            if consumed.contains(&path) {
                continue;
            }
            let dir = hub.host_path(&path);
            fs::create_dir_all(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
            chown(&dir, Some(0), Some(0)).unwrap();
        }
    }
}

/// What `appliance-service-secrets` makes at first boot: SearXNG's secret
/// key and webextract's key in their env files (0400, root; dockerd reads
/// them).
fn service_secrets(hub: &Hub) {
    use agent_appliance::generator::model::services::{EXTRACT_KEY_ENV, SEARCH_SECRET_ENV};
    for (file, variable) in [
        (SEARCH_SECRET_ENV, "SEARXNG_SECRET"),
        (EXTRACT_KEY_ENV, "TAVILY_API_KEY"),
    ] {
        let path = hub.host_path(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut bytes = [0u8; 24];
        use std::io::Read as _;
        fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        fs::write(&path, format!("{variable}={key}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    }
}

pub fn assert_ok(what: &str, output: &Output) {
    crate::support::assert_succeeded(what, output);
}

/// Waits for Synapse's `/versions` inside the namespace.
pub fn wait_for_synapse(hub: &mut Hub) {
    let started = Instant::now();
    loop {
        let client = hub.client();
        let up = hub.netns.run(move || {
            client
                .get("/_matrix/client/versions", None)
                .is_ok_and(|reply| reply.ok())
        });
        if up {
            eprintln!(
                "rehearsal: synapse ready after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        let synapse = hub.synapse.as_mut().unwrap();
        if let Some(status) = synapse.exited() {
            panic!("synapse exited with {status}:\n{}", synapse.log_tail());
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "synapse not ready after 90 s:\n{}",
            synapse.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The page the browser test reads, served inside the namespace, and the
/// results page the search backend's rehearsal engine reads (a static
/// file: the query is ignored), which links to it.
fn write_web_root(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("search.html"),
        format!("<!doctype html><html><body><article><a href=\"{}\">{WEB_TITLE}</a><p>Served inside the rehearsal's network namespace.</p></article></body></html>\n", web_url("index.html")),
    )
    .unwrap();
    fs::write(
        dir.join("index.html"),
        format!("<!doctype html><html><head><title>{WEB_TITLE}</title></head><body><h1>{WEB_TITLE}</h1><p>Served inside the rehearsal's network namespace.</p></body></html>\n"),
    )
    .unwrap();
}

pub struct Services<'a> {
    pub synapse_venv: &'a Path,
}

/// Brings the hub up to the point where the sandboxes can start.
pub fn start(name: &str, tools: Services) -> Hub {
    start_from(name, tools, &root())
}

/// `start`, with the spec and generated tree in `spec_dir`.
pub fn start_from(name: &str, tools: Services, spec_dir: &Path) -> Hub {
    let appliance =
        agent_appliance::operator::commands::load(&spec_dir.join("appliance.toml")).expect("the spec loads");
    let host = appliance.hosts["hub"].clone();
    let overlay = appliance.overlay.as_ref().expect("the default spec links its hosts");
    let overlay_address = host.overlay_address.expect("the hub has an overlay address");
    let netns = Netns::create(
        name,
        &[(OVERLAY_INTERFACE, format!("{overlay_address}/{}", overlay.prefix))],
    );
    let host_root = tempfile::Builder::new()
        .prefix("appliance-rehearsal-")
        .tempdir()
        .unwrap();
    let wrapper = vec![
        "nsenter".to_string(),
        format!("--net={}", netns.path().display()),
        "--".into(),
    ];
    let daemon = Dockerd::start_with(&daemon_json(&host), &wrapper)
        .unwrap_or_else(|log| panic!("dockerd rejected the generated settings:\n{log}"));
    let data = host_root.path().join("var/lib/matrix-synapse");
    let state = host_root.path().join(STATE_DIR.trim_start_matches('/'));
    let internet = connect_internet(&netns, &name.replace("rehearsal-", "rehearsal-net-"));
    let mut hub = Hub {
        daemon,
        services: Vec::new(),
        synapse: None,
        netns,
        internet,
        appliance,
        spec_dir: spec_dir.to_path_buf(),
        host_root,
    };

    // The bridge, exactly as the host module creates it.
    let create = agent_appliance::generator::render::network_create(&hub.appliance, &host);
    let refs: Vec<&str> = create[1..].iter().map(String::as_str).collect();
    assert_ok("docker network create", &hub.daemon.docker(&refs));

    // The DNS forwarder: the generated dnsmasq settings (listen on the
    // bridge address only, bind-dynamic, no-hosts), forwarding to "the
    // internet's DNS" inside the namespace (`start_egress`) instead of the
    // host's resolvers: nothing may leave the namespace.
    let logs = hub.host_root.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let mut dnsmasq = hub.netns.command("dnsmasq");
    dnsmasq.args([
        "--keep-in-foreground",
        "--log-facility=-",
        "--conf-file=/dev/null",
        "--user=root",
        &format!("--pid-file={}", logs.join("dnsmasq.pid").display()),
        &format!("--listen-address={}", host.network_address),
        "--bind-dynamic",
        "--no-hosts",
        "--no-resolv",
        &format!("--server={WEB_ADDRESS}"),
        // Logging only: which names the sandboxes ask for (docs/rehearsal.md).
        "--log-queries",
    ]);
    hub.services
        .push(Process::spawn("dnsmasq", dnsmasq, logs.join("dnsmasq.log")));

    // Secrets, then Synapse, as systemd orders them.
    assert_ok(
        "appliance bootstrap --secrets-only",
        &hub.bootstrap(&["--secrets-only"]),
    );
    let settings = crate::support::synapse::rerooted_settings(&hub.appliance, &data, &state);
    hub.synapse = Some(Synapse::spawn(
        tools.synapse_venv,
        &data,
        &settings,
        "http://127.0.0.1:8008",
        &wrapper,
    ));
    wait_for_synapse(&mut hub);
    let bootstrap = hub.bootstrap(&[]);
    assert_ok("appliance bootstrap", &bootstrap);
    eprintln!(
        "rehearsal: bootstrap: {}{}",
        String::from_utf8_lossy(&bootstrap.stdout).trim(),
        String::from_utf8_lossy(&bootstrap.stderr).trim()
    );

    // The stand-in model server runs in the inference sandbox, as Ollama
    // would (tests/rehearsal/images.rs); the agents reach it at the
    // generated address.

    // The egress: the generated firewall and proxy, once the operator has
    // put balthasar's GitHub token in the file its `credentials` names
    // (docs/agents.md), which the proxy reads when it starts.
    github_files(&hub);
    operator_puts_token_files(&hub);
    start_egress(&mut hub, &logs);

    // The test web host, "the internet" inside the namespace.
    let web = hub.host_root.path().join("web");
    write_web_root(&web);
    let mut server = hub.internet.command("python3");
    server
        .args(["-m", "http.server", "--bind"])
        .arg(WEB_ADDRESS.to_string())
        .arg(WEB_PORT.to_string())
        .arg("--directory")
        .arg(&web);
    hub.services
        .push(Process::spawn("test web host", server, logs.join("web.log")));
    start_github_standin(&mut hub, &logs);

    tmpfiles(&hub);
    std::thread::sleep(Duration::from_millis(300));
    for service in &mut hub.services {
        service.assert_running();
    }
    hub
}

/// A test CA (trusted by squid, which terminates balthasar's TLS to the
/// API, and by the rehearsal's `picoclaw` image) and its certificate for
/// `api.github.com`, and the one token the stand-in accepts: made before
/// squid starts, which trusts the CA and adds the token.
fn github_files(hub: &Hub) {
    let dir = hub.github_dir();
    fs::create_dir_all(&dir).unwrap();
    squid::test_ca_and_server_certificate(&dir, "/CN=agent-appliance rehearsal test CA", &[GITHUB_API, GRANT_HOST]);
    let mut random = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
        .unwrap();
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    fs::write(dir.join("token"), format!("ghp_rehearsal{token}")).unwrap();
}

/// The stand-in GitHub API on "the internet" at port 443, which accepts
/// only the token in `github/token` (`github_files`).
fn start_github_standin(hub: &mut Hub, logs: &Path) {
    let dir = hub.github_dir();
    let placeholders: String = hub
        .hub()
        .sandboxes
        .iter()
        .flat_map(|s| s.credentials.iter().map(|c| format!("{}\n", c.placeholder)))
        .collect();
    fs::write(dir.join("placeholders"), placeholders).unwrap();
    let mut server = hub.internet.command("python3");
    server
        .arg(root().join("tests/rehearsal/github_standin.py"))
        .arg(format!("--bind={WEB_ADDRESS}"))
        .arg("--port=443")
        .arg(format!("--cert={}", dir.join("api.pem").display()))
        .arg(format!("--key={}", dir.join("api.key").display()))
        .arg(format!("--token-file={}", dir.join("token").display()))
        .arg(format!("--placeholder-file={}", dir.join("placeholders").display()))
        .arg(format!("--log={}", dir.join("requests.jsonl").display()));
    hub.services
        .push(Process::spawn("stand-in GitHub API", server, logs.join("github.log")));
}

/// The generated egress of the hub, as the NixOS module runs it: the two
/// nftables tables from the spec's generated tree (what
/// `networking.nftables.tables` loads), and squid with the generated
/// `egress-proxy.conf` on the bridge address. The test web host's address
/// goes on the namespace's loopback, where only the proxy reaches it.
fn start_egress(hub: &mut Hub, logs: &Path) {
    start_internet_dns(hub, logs);
    let rules = logs.join("ruleset.nft");
    fs::write(&rules, egress_ruleset(&hub.generated())).unwrap();
    let load = hub.netns.command("nft").arg("-f").arg(&rules).output().unwrap();
    assert_ok("nft -f (the generated tables)", &load);
    let conf = logs.join("squid.conf");
    fs::write(
        &conf,
        squid_config(hub, &logs.join("squid"), &hub.host_path(GRANTS_DIR)),
    )
    .unwrap();
    squid::assert_parses(hub.netns.command("squid"), &conf);
    let mut squid = hub.netns.command("squid");
    squid.arg("-N").arg("-f").arg(&conf);
    hub.services
        .push(Process::spawn("squid", squid, logs.join("squid.out")));
}

/// "The internet's DNS": the upstream of the bridge's forwarder and of
/// squid (the host's resolvers on the appliance), on the test web host's
/// address. It knows one name, the test web host's, and forwards nothing.
fn start_internet_dns(hub: &mut Hub, logs: &Path) {
    let mut dns = hub.internet.command("dnsmasq");
    dns.args([
        "--keep-in-foreground",
        "--log-facility=-",
        "--conf-file=/dev/null",
        "--user=root",
        &format!("--pid-file={}", logs.join("internet-dns.pid").display()),
        &format!("--listen-address={WEB_ADDRESS}"),
        "--bind-interfaces",
        "--no-hosts",
        "--no-resolv",
        &format!("--host-record={WEB_HOST},{WEB_ADDRESS}"),
        &format!("--host-record={GITHUB_API},{WEB_ADDRESS}"),
        &format!("--host-record={GRANT_HOST},{WEB_ADDRESS}"),
        &format!("--host-record={PRIVATE_GRANT_HOST},{PRIVATE_GRANT_ADDRESS}"),
    ]);
    hub.services
        .push(Process::spawn("internet DNS", dns, logs.join("internet-dns.log")));
}

/// The generated table bodies in their tables, with squid's user
/// spelled as Debian's build runs it (`proxy`; NixOS' is `squid`): the rule
/// that keeps the proxy off this host's own addresses needs a user that
/// exists.
fn egress_ruleset(generated: &Path) -> String {
    use agent_appliance::generator::render::egress::{BRIDGE_TABLE, INET_TABLE, PROXY_USER};
    let body = |file: &str| fs::read_to_string(generated.join("hosts/hub").join(file)).unwrap();
    let inet = body("firewall-inet.nft");
    let squid_user = format!("meta skuid \"{PROXY_USER}\"");
    assert!(
        inet.contains(&squid_user),
        "the generated firewall names the proxy's user:\n{inet}"
    );
    format!(
        "table inet {INET_TABLE} {{\n{}}}\ntable bridge {BRIDGE_TABLE} {{\n{}}}\n",
        inet.replace(&squid_user, "meta skuid \"proxy\""),
        body("firewall-bridge.nft")
    )
}

/// The hub's uplink and "the internet's" end of it (TEST-NET-2, RFC 5737:
/// used only between these two namespaces).
const UPLINK: &str = "198.51.100.1";
const DOWNLINK: &str = "198.51.100.2";

/// "The internet": a namespace of its own with the test web host's address
/// on its loopback, routed from the hub over a veth pair. It must not be in
/// the hub's namespace: the generated firewall refuses the proxy every
/// address of its own host. Nothing routes further: no packet leaves the
/// two namespaces.
fn connect_internet(hub: &Netns, name: &str) -> Netns {
    let internet = Netns::create(name, &[]);
    hub.link_to(&internet, &format!("{UPLINK}/30"), &format!("{DOWNLINK}/30"));
    internet.ip(&["addr", "add", &format!("{WEB_ADDRESS}/32"), "dev", "lo"]);
    hub.ip(&["route", "add", &format!("{WEB_ADDRESS}/32"), "via", DOWNLINK]);
    internet
}

/// What modules/egress.nix makes for a credential, in the rehearsal's
/// places (see `squid_config`); `None` for any other line.
fn credential_paths(hub: &Hub, line: &str, dir: &Path) -> Option<String> {
    Some(match line.split_whitespace().next() {
        Some("http_port") if line.contains(" ssl-bump ") => {
            let (cert, key) = appliance_ca(hub, dir);
            line.replace(credentials::CA_CERT, cert.to_str().unwrap())
                .replace(credentials::CA_KEY, key.to_str().unwrap())
        }
        Some("sslcrtd_program") => {
            let db = dir.join("ssl_db");
            squid::certificate_db(&db);
            line.replace(
                agent_appliance::generator::render::egress::CERTGEN_MARKER,
                squid::CERTGEN,
            )
            .replace(credentials::SSL_DB, db.to_str().unwrap())
        }
        Some("include") => {
            let path = line.split_whitespace().nth(1).unwrap();
            let file = dir.join(Path::new(path).file_name().unwrap());
            fs::write(&file, credential_include(hub, path)).unwrap();
            format!("include {}", file.display())
        }
        _ => return None,
    })
}

/// A grant ACL's file (the warden's `--grants-dir`) moved below the hub's
/// root, created empty for squid to read at start and reload; any other
/// line as it is.
fn grant_file(line: &str, grants_dir: &Path) -> String {
    if !(line.starts_with("acl ") && line.contains(GRANTS_DIR)) {
        return line.to_string();
    }
    if let Some(name) = line.split('"').nth(1).and_then(|p| p.rsplit('/').next()) {
        let file = grants_dir.join(name);
        fs::write(&file, "").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    }
    line.replace(GRANTS_DIR, &grants_dir.display().to_string())
}

/// The generated squid configuration, with the paths and user of
/// this machine (pid file, logs below `dir`, Debian's `proxy` user) and
/// "the internet's DNS" inside the namespace as its resolver (on the
/// appliance, the host's). Every ACL is as generated. With a credential
/// (`ssl-bump`), what modules/egress.nix makes on the host: the appliance
/// CA (its certificate where the sandboxes' bind finds it below the
/// rehearsal's host root, its key in `dir`), squid's certificate database
/// (Debian's security_file_certgen, squid-openssl) and each include file
/// from the token file; squid also trusts the stand-in GitHub API's test
/// CA (GitHub's real certificate on the appliance). The grant files are
/// below the hub's root, where the warden writes them.
fn squid_config(hub: &Hub, dir: &Path, grants_dir: &Path) -> String {
    squid::make_dir(dir);
    fs::create_dir_all(grants_dir).unwrap();
    fs::set_permissions(grants_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let generated = fs::read_to_string(hub.generated().join("hosts/hub/egress-proxy.conf")).unwrap();
    let mut text = String::new();
    for line in generated.lines() {
        let replaced = squid::with_test_paths(line, dir)
            .or_else(|| credential_paths(hub, line, dir))
            .unwrap_or_else(|| grant_file(line, grants_dir));
        text.push_str(&replaced);
        text.push('\n');
    }
    if text.contains(" ssl-bump ") {
        text.push_str(&format!(
            "tls_outgoing_options cafile={}\n",
            hub.github_dir().join("test-ca.pem").display()
        ));
    }
    text.push_str(&format!("dns_nameservers {WEB_ADDRESS}\nshutdown_lifetime 0 seconds\n"));
    text
}

/// The appliance CA as modules/egress.nix makes it at first boot: the
/// certificate and its OpenSSL hash link in the host's CA directory (below
/// the host root, which the sandboxes with a credential bind), the key
/// readable by squid's group only.
fn appliance_ca(hub: &Hub, dir: &Path) -> (PathBuf, PathBuf) {
    let ca_dir = hub.host_path(credentials::CA_DIR);
    fs::create_dir_all(&ca_dir).unwrap();
    let (cert, key) = (ca_dir.join("ca.pem"), dir.join("ca.key"));
    squid::appliance_ca(&cert, &key);
    squid::key_for_squid(&key);
    fs::set_permissions(&cert, fs::Permissions::from_mode(0o444)).unwrap();
    let hash = Command::new("openssl")
        .args(["x509", "-hash", "-noout", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_ok("openssl x509 -hash", &hash);
    let link = ca_dir.join(format!("{}.0", String::from_utf8_lossy(&hash.stdout).trim()));
    std::os::unix::fs::symlink("ca.pem", link).unwrap();
    (cert, key)
}

/// The include file `path` as squid's unit writes it (modules/egress.nix):
/// the generated line around the token read from the credential's token
/// file; a comment without one.
fn credential_include(hub: &Hub, path: &str) -> String {
    for sandbox in &hub.hub().sandboxes {
        for credential in &sandbox.credentials {
            if credential.injection_file(&sandbox.name) != path {
                continue;
            }
            let token = fs::read_to_string(hub.host_path(&credential.token_file)).unwrap_or_default();
            let token = token.trim();
            if token.is_empty() || !token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return "# no credential in the token file\n".into();
            }
            let (before, after) = agent_appliance::generator::render::egress::injection_line(&sandbox.name, credential);
            return format!("{before}{token}{after}\n");
        }
    }
    panic!("the generated configuration includes {path}, which no credential names")
}

/// What the operator does for the `github` skill (docs/agents.md): puts
/// the token in the file each agent's `credentials` names, 0400, before
/// the proxy starts. The token is the stand-in GitHub API's.
fn operator_puts_token_files(hub: &Hub) {
    for sandbox in &hub.hub().sandboxes {
        for credential in &sandbox.credentials {
            let file = hub.host_path(&credential.token_file);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(&file, hub.github_token()).unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(0o400)).unwrap();
        }
    }
}

impl Hub {
    /// The DNS forwarder's query log so far.
    pub fn dns_log(&self) -> String {
        fs::read_to_string(self.host_root.path().join("logs/dnsmasq.log")).unwrap_or_default()
    }

    /// The stand-in GitHub API's files: `test-ca.pem` (the test CA), `token`
    /// (the only credential it accepts), `requests.jsonl` (its log).
    pub fn github_dir(&self) -> PathBuf {
        self.host_root.path().join("github")
    }

    /// The token the operator gives balthasar, in the file its
    /// `credentials` names (the proxy adds it; the sandbox holds a
    /// placeholder).
    pub fn github_token(&self) -> String {
        fs::read_to_string(self.github_dir().join("token")).unwrap()
    }

    /// The stand-in GitHub API's log so far, one JSON object a request
    /// (`path`, `host`, `authorized`, `sent`: which credential arrived).
    pub fn github_log(&self) -> Vec<Value> {
        fs::read_to_string(self.github_dir().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }

    /// The stand-in GitHub API's requests so far: (path, authorized).
    pub fn github_requests(&self) -> Vec<(String, bool)> {
        fs::read_to_string(self.github_dir().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                (
                    v["path"].as_str().unwrap_or_default().to_string(),
                    v["authorized"] == true,
                )
            })
            .collect()
    }

    /// The egress proxy's access log so far.
    pub fn proxy_log(&self) -> String {
        fs::read_to_string(self.proxy_log_path()).unwrap_or_default()
    }

    /// The egress proxy's access log, re-rooted like the state dir.
    /// What makes the rehearsal's squid read its grant files again (the
    /// warden's `--proxy-reload`; `systemctl reload squid.service` on the
    /// appliance).
    pub fn proxy_reload(&self) -> String {
        format!(
            "squid -k reconfigure -f {}",
            self.host_root.path().join("logs/squid.conf").display()
        )
    }

    pub fn proxy_log_path(&self) -> PathBuf {
        self.host_root.path().join("logs/squid/access.log")
    }
}
