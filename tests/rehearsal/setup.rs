//! Bringing the rehearsal's hub to life, shared by the rehearsal
//! (tests/rehearsal/main.rs) and its benchmark (benches/rehearsal.rs): the
//! tools it needs, the sandboxes' images and their start in dependency
//! order.

use crate::hub::{self, Hub};
use crate::images;
use crate::support::{require_root, require_tools, root};

/// Whether every tool the rehearsal needs is here (each missing one
/// reported), and this runs as root; in CI a missing one fails.
pub fn tools_present() -> bool {
    let why = "the rehearsal (docs/rehearsal.md)";
    let tools = [
        "runsc",
        "dockerd",
        "debootstrap",
        "dnsmasq",
        "nsenter",
        "ip",
        "npm",
        "python3",
        "tar",
        "timeout",
    ];
    let found = require_tools(&tools, why);
    require_root("the rehearsal starts dockerd in a network namespace") && found
}

/// The stand-in model server's script (tests/rehearsal/standin_model.py).
fn standin() -> std::path::PathBuf {
    let path = root().join("tests/rehearsal/standin_model.py");
    assert!(
        path.is_file(),
        "the stand-in model server {} is missing",
        path.display()
    );
    path
}

/// The image of every sandbox of the hub, built here or taken from the
/// cache, with the stand-in as the inference image's model server.
pub fn build_images(hub: &Hub) {
    let standin = standin();
    let wanted: Vec<String> = hub.sandboxes().iter().map(|s| s.image.clone()).collect();
    let inference = hub
        .appliance
        .inference
        .as_ref()
        .expect("the default spec has inference");
    let services = images::ServiceFiles {
        standin: &standin,
        models: inference.models.clone(),
        server_name: hub.appliance.matrix.server_name.clone(),
        web: format!("{}:{}", hub::WEB_HOST, hub::WEB_PORT),
        github_ca: hub.github_dir().join("test-ca.pem"),
    };
    images::build_all(&hub.daemon, hub.host_root.path(), &wanted, &services);
}

/// How the sandboxes start: one after the other in dependency order, or
/// in dependency waves, each wave's `docker run`s at once, as systemd
/// starts units without an ordering between them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Start {
    OneByOne,
    #[allow(dead_code)] // the bench's (`BENCH_START=waves`)
    Waves,
}

/// Every sandbox of the hub, dependencies first (the code sandbox before
/// its agent), as systemd orders the units; an agent whose Docker is the
/// warden's approval broker once the broker's socket exists (its unit's
/// `waitFor`; the warden runs by then). The rehearsal starts them one by
/// one, as it always did: its waits were tuned for that, and on this
/// 2-vCPU machine the waves did not make the hub answer sooner
/// (docs/benchmarks.md, issue 25 item 3).
pub fn start_sandboxes(hub: &Hub, start: Start) {
    let sandboxes = hub.sandboxes();
    let mut started: Vec<String> = Vec::new();
    while started.len() < sandboxes.len() {
        let mut ready = sandboxes
            .iter()
            .filter(|s| !started.contains(&s.name) && s.depends_on.iter().all(|d| started.contains(d)));
        let wave: Vec<&agent_appliance::generator::model::Sandbox> = match start {
            Start::Waves => ready.collect(),
            Start::OneByOne => ready.next().into_iter().collect(),
        };
        assert!(
            !wave.is_empty(),
            "no sandbox can start: each waits for one not started ({started:?} are)"
        );
        std::thread::scope(|scope| {
            for sandbox in &wave {
                scope.spawn(move || {
                    wait_for_the_broker(hub, sandbox);
                    hub.start_sandbox(sandbox);
                });
            }
        });
        started.extend(wave.iter().map(|s| s.name.clone()));
    }
}

fn wait_for_the_broker(hub: &Hub, sandbox: &agent_appliance::generator::model::Sandbox) {
    use agent_appliance::generator::model::{APPROVAL_SOCKET_DIR, BindSource, DOCKER_SOCKET_FILE};
    for bind in &sandbox.binds {
        let BindSource::Host(path) = &bind.source else { continue };
        if !path.starts_with(&format!("{APPROVAL_SOCKET_DIR}/")) {
            continue;
        }
        let socket = hub.host_path(path).join(DOCKER_SOCKET_FILE);
        let started = std::time::Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "the warden's approval broker did not make {} within 60 s",
                socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}
