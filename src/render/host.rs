//! The NixOS module of one host: SSH, firewall, Docker with the gVisor
//! runtimes, Synapse, Ollama, the bootstrap units and every sandbox.

use std::collections::BTreeMap;

use anyhow::Result;
use minijinja::Value;
use serde::Serialize;

use super::images::image_file;
use super::nix::{self, expr};
use super::templates::Engine;
use super::{STAMP, Tree};
use crate::docker::run_options;
use crate::model::services::{EXTRACT_KEY_ENV, EXTRACT_SANDBOX, SEARCH_SANDBOX, SEARCH_SECRET_ENV};
use crate::model::{
    Appliance, BRIDGE_INTERFACE, BindSource, Host, NETWORK_NAME, OVERLAY_INTERFACE, SOCKET_DIR_MODE, STATE_DIR,
    Sandbox, WIREGUARD_PORT, is_socket_dir,
};
use crate::spec::schema::{SynapseDatabase, Target};

/// The oldest gVisor release the hosts may run: arm64 systrap supports the
/// 39-bit address space of Raspberry Pi kernels from release-20260316.0
/// (google/gvisor#12694). Asserted at evaluation; nix/sources.json pins the
/// release the overlay builds when nixpkgs is older.
pub const RUNSC_MINIMUM: &str = "20260316.0";

/// NVIDIA drivers the shipped gVisor's nvproxy supports: `runsc nvproxy
/// list-supported-drivers` of release-20260406.0 (nix/sources.json `gvisor`;
/// its `pkg/sentry/devices/nvproxy/version.go` and that of the `go`-branch
/// build .ci/gobuild.sh makes list the same 18). nvproxy needs an exact
/// match. tests/nvproxy.rs checks this against the built runsc and the Go
/// module's source.
pub const NVPROXY_DRIVERS: &[&str] = &[
    "535.129.03",
    "535.183.06",
    "535.247.01",
    "535.261.03",
    "535.274.02",
    "535.288.01",
    "550.90.12",
    "570.124.06",
    "570.133.20",
    "570.172.08",
    "570.195.03",
    "575.57.08",
    "580.65.06",
    "580.82.07",
    "580.95.05",
    "580.105.08",
    "580.126.09",
    "590.48.01",
];

/// The `nvidiaPackages` attribute GPU hosts use: NVIDIA's data-center driver
/// of the 590 branch (590.48.01 in the nixpkgs of 2026), the one driver that
/// nixpkgs packages with the open kernel module AND the shipped runsc
/// (release-20260406.0) lists. nixpkgs' default (`stable`, 595.x) and the 580
/// long-term branch (`legacy_580`, 580.173.02; gVisor lists it only from
/// release-20260721.0) are not on that list, and nvproxy needs an exact
/// match. The data-center drivers come without nvidia-settings
/// (`useSettings = false`), so the generated module turns that tool off; a
/// headless appliance has no use for it. tests/flake/catalog.rs checks the
/// attribute's version against `NVPROXY_DRIVERS`.
pub const NVIDIA_PACKAGE: &str = "dc_590";

/// Where each host keeps its WireGuard private key, made at first boot.
pub const WIREGUARD_KEY_DIR: &str = "/var/lib/appliance/wireguard";

#[derive(Serialize)]
struct HostContext {
    stamp: &'static str,
    /// Modules of this host next to `default.nix` (pairing, the admins').
    imports: Value,
    appliance: String,
    host: String,
    target: Value,
    system: Value,
    runsc_minimum: &'static str,
    ssh_keys: Vec<String>,
    firewall: Firewall,
    gpu: Option<crate::model::Gpu>,
    gpu_driver: GpuDriver,
    wireguard: Option<WireGuard>,
    runtimes: Vec<RuntimeNote>,
    /// `appliance.docker.network` (modules/docker-gvisor.nix).
    network: DockerNetwork,
    tmpfiles: Vec<String>,
    /// `appliance.synapse` (modules/synapse.nix), on the Matrix host.
    synapse: Option<Synapse>,
    /// The bridge address the DNS resolver listens on, when sandboxes need it.
    dns: Option<String>,
    /// The egress firewall tables and, when a sandbox has egress, the proxy.
    egress: Option<EgressFiles>,
    ollama: Option<BTreeMap<&'static str, Value>>,
    /// `appliance.models` (modules/models.nix): the oneshot that pulls the
    /// models into the inference sandbox.
    models: Option<ModelPull>,
    /// `appliance.ready.units` (modules/ready.nix): the sandboxes
    /// `appliance-ready.target` waits for; the models module adds its unit.
    ready: Vec<String>,
    /// Secrets of the appliance's own service sandboxes, made at first boot
    /// (`appliance.serviceSecrets`, modules/service-secrets.nix), by sandbox.
    service_secrets: BTreeMap<String, ServiceSecret>,
    containers: BTreeMap<String, BTreeMap<&'static str, Value>>,
    container_units: BTreeMap<String, BTreeMap<&'static str, Value>>,
    /// Path units starting a sandbox once pairing has fetched its secrets.
    secret_waits: BTreeMap<String, Value>,
    /// Whether a sandbox uses the GPU (CDI specs from the container toolkit).
    gpu_containers: bool,
}

/// One value of `appliance.serviceSecrets` (modules/service-secrets.nix):
/// the env file and the variable it sets to a random key.
#[derive(Serialize)]
struct ServiceSecret {
    file: &'static str,
    variable: &'static str,
}

/// The unit that makes the service sandboxes' secrets (modules/service-secrets.nix).
const SERVICE_SECRETS_UNIT: &str = "appliance-service-secrets.service";

/// SearXNG's secret key and webextract's key (shared with its clients,
/// under the name Hermes reads), one env file each.
fn service_secrets(host: &Host) -> BTreeMap<String, ServiceSecret> {
    host.sandboxes
        .iter()
        .filter_map(|s| {
            let (file, variable) = match s.name.as_str() {
                SEARCH_SANDBOX => (SEARCH_SECRET_ENV, "SEARXNG_SECRET"),
                EXTRACT_SANDBOX => (EXTRACT_KEY_ENV, "TAVILY_API_KEY"),
                _ => return None,
            };
            Some((s.name.clone(), ServiceSecret { file, variable }))
        })
        .collect()
}

#[derive(Serialize)]
struct ModelPull {
    sandbox_unit: String,
    /// The script beside the host module (`PULL_SCRIPT`).
    pull_script: &'static str,
}

/// The values of `appliance.synapse` (modules/synapse.nix) but its
/// settings file, which the template names by a path literal.
#[derive(Serialize)]
struct Synapse {
    /// The PostgreSQL role and database of Synapse, when it uses PostgreSQL.
    postgresql: Option<&'static str>,
    /// `after`, `requires` and, with an overlay, `wants`.
    unit: BTreeMap<&'static str, Value>,
    /// `IPAddressAllow` of the unit; `None` with federation.
    allowed_addresses: Option<Vec<String>>,
}

#[derive(Serialize)]
struct EgressFiles {
    proxy: bool,
    /// The grant files the proxy reads (`appliance.egress.grantFiles`).
    grants: Vec<String>,
}

#[derive(Serialize)]
struct GpuDriver {
    package: &'static str,
    supported: &'static [&'static str],
}

/// The values of `appliance.wireguard` (modules/wireguard.nix).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireGuard {
    enable: bool,
    interface: &'static str,
    /// This host's overlay address with the overlay's prefix.
    address: String,
    port: u16,
    key_file: String,
    peers: Vec<BTreeMap<&'static str, Value>>,
    /// Other hosts whose public key the spec does not have yet.
    unpaired: Vec<String>,
    /// Synapse and nginx (on the Matrix host) listen on the overlay address
    /// besides loopback and the bridge: they bind it non-locally so that
    /// they start when WireGuard fails.
    nonlocal_bind: bool,
}

#[derive(Serialize)]
struct Firewall {
    tcp: Vec<u16>,
    udp: Vec<u16>,
    interfaces: BTreeMap<String, BTreeMap<&'static str, Vec<u16>>>,
}

#[derive(Serialize)]
struct RuntimeNote {
    name: String,
    reasons: Vec<&'static str>,
}

/// The sandboxes' Docker network: the values of
/// `appliance.docker.network` (modules/docker-gvisor.nix), which creates
/// it, and of `network_create`, which tests create it with.
#[derive(Serialize)]
pub struct DockerNetwork {
    pub name: &'static str,
    pub subnet: String,
    pub gateway: String,
    pub bridge: &'static str,
    /// Docker's default (1500) when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

/// nixpkgs' unit that writes the NVIDIA CDI specs at boot
/// (`hardware.nvidia-container-toolkit.enable`).
pub const CDI_GENERATOR_UNIT: &str = "nvidia-container-toolkit-cdi-generator.service";

/// The MTU of GCE's VPC network: the sandboxes' bridge must not exceed it.
pub const GCE_MTU: u16 = 1460;

/// The systemd device unit of a network interface (`systemd-escape`d name).
pub(super) fn device_unit(interface: &str) -> String {
    format!("sys-subsystem-net-devices-{}.device", interface.replace('-', "\\x2d"))
}

/// The unit of nixpkgs' scripted WireGuard backend that creates the
/// interface (`generateInterfaceUnit` in
/// nixos/modules/services/networking/wireguard.nix: `wireguard-${name}`).
/// A oneshot that adds the addresses before it brings the link up, so once
/// it is active the address exists; the device unit appears at `ip link
/// add`, before the address. The networkd backend has no such unit (then
/// `After=` on it is a no-op and systemd-networkd-wait-online, before
/// network-online.target, waits for the address).
pub(super) fn wireguard_unit(interface: &str) -> String {
    format!("wireguard-{interface}.service")
}

/// A unit's ordering and requirements: `deps` are units of this host it
/// needs; with `overlay`, it serves the overlay only, so it also needs the
/// WireGuard interface (its device unit, by either backend) and starts
/// after its address is up.
pub(super) fn unit_deps(deps: Vec<String>, overlay: Option<&str>) -> BTreeMap<&'static str, Value> {
    let mut unit = overlay_ordering(deps.clone(), overlay);
    let mut requires = deps;
    if let Some(interface) = overlay {
        requires.push(device_unit(interface));
    }
    unit.insert("requires", nix::value(requires));
    unit
}

/// For a unit that also listens on the overlay besides loopback and the
/// sandboxes' bridge (Synapse, nginx): it starts after the overlay's
/// address is up but does not need it, so Matrix keeps working on this
/// host when WireGuard fails (the host binds the overlay address
/// non-locally: `appliance.wireguard.nonlocalBind`, modules/wireguard.nix).
pub(super) fn unit_deps_overlay_optional(deps: Vec<String>, overlay: Option<&str>) -> BTreeMap<&'static str, Value> {
    let mut unit = overlay_ordering(deps.clone(), overlay);
    unit.insert("requires", nix::value(deps));
    unit
}

/// `after` (and `wants`) for `deps` and, with `overlay`, the WireGuard
/// interface's address by either backend.
fn overlay_ordering(deps: Vec<String>, overlay: Option<&str>) -> BTreeMap<&'static str, Value> {
    let mut after = deps;
    let mut unit = BTreeMap::new();
    if let Some(interface) = overlay {
        after.push("network-online.target".into());
        after.push(device_unit(interface));
        after.push(wireguard_unit(interface));
        unit.insert("wants", nix::value(["network-online.target"]));
    }
    unit.insert("after", nix::value(after));
    unit
}

/// Synapse's database, unit ordering and address filter (SECURITY.md), on
/// the Matrix host.
fn synapse(appliance: &Appliance, host: &Host, overlay: Option<&str>) -> Option<Synapse> {
    if !host.runs_matrix {
        return None;
    }
    Some(Synapse {
        postgresql: (appliance.matrix.database == SynapseDatabase::Postgresql).then_some(super::synapse::POSTGRES_NAME),
        unit: unit_deps_overlay_optional(
            vec![
                "appliance-network.service".to_string(),
                "appliance-secrets.service".to_string(),
            ],
            overlay,
        ),
        allowed_addresses: super::synapse::allowed_addresses(appliance),
    })
}

pub fn render(appliance: &Appliance, host: &Host, imports: &[String], engine: &Engine, tree: &mut Tree) -> Result<()> {
    let wireguard = wireguard(appliance, host);
    // Services that bind the overlay address wait for the interface.
    let overlay = wireguard.as_ref().map(|wg| wg.interface);
    let Containers {
        tmpfiles,
        containers,
        units: container_units,
        secret_waits,
    } = containers(host, overlay);

    let context = HostContext {
        stamp: STAMP,
        imports: super::pairing::imports_value(imports),
        appliance: appliance.name.clone(),
        host: host.name.clone(),
        target: nix::value(host.target),
        system: nix::value(host.system),
        runsc_minimum: RUNSC_MINIMUM,
        ssh_keys: host.ssh_keys.clone(),
        firewall: firewall(host),
        gpu: host.gpu.clone(),
        gpu_driver: GpuDriver {
            package: NVIDIA_PACKAGE,
            supported: NVPROXY_DRIVERS,
        },
        wireguard,
        runtimes: host
            .runtimes
            .iter()
            .map(|p| RuntimeNote {
                name: p.name(),
                reasons: p.reasons(),
            })
            .collect(),
        network: docker_network(appliance, host),
        tmpfiles,
        synapse: synapse(appliance, host, overlay),
        egress: host.sandboxes.iter().any(|s| s.network.is_some()).then(|| EgressFiles {
            proxy: super::egress::proxy_config(host).is_some(),
            grants: host.sandboxes.iter().filter_map(|s| s.grants.clone()).collect(),
        }),
        dns: host.resolves_names().then(|| host.network_address.to_string()),
        ollama: ollama(appliance, host, overlay),
        models: model_pull(appliance, host),
        ready: ready_units(host),
        service_secrets: service_secrets(host),
        containers,
        container_units,
        secret_waits,
        gpu_containers: host.sandboxes.iter().any(|s| s.gpus),
    };
    let text = engine.render("host.nix.j2", &context)?;
    tree.insert(format!("hosts/{}/default.nix", host.name), text.into_bytes());
    if let Some(script) = pull_script(appliance, host) {
        tree.insert(format!("hosts/{}/{PULL_SCRIPT}", host.name), script.into_bytes());
    }
    Ok(())
}

/// The script the models unit runs; the rehearsal runs the same file.
pub const PULL_SCRIPT: &str = "pull-models.sh";

/// The inference sandbox of this host, in `gvisor` mode.
fn inference_sandbox<'a>(appliance: &'a Appliance, host: &Host) -> Option<&'a crate::model::Inference> {
    appliance
        .inference
        .as_ref()
        .filter(|i| host.runs_inference && i.sandbox.is_some())
}

fn model_pull(appliance: &Appliance, host: &Host) -> Option<ModelPull> {
    let inference = inference_sandbox(appliance, host)?;
    Some(ModelPull {
        sandbox_unit: format!("docker-{}.service", inference.sandbox.as_deref().unwrap_or_default()),
        pull_script: PULL_SCRIPT,
    })
}

/// Pulls every model through the inference sandbox's API, one at a time:
/// Ollama itself downloads (through the egress proxy when the sandbox has
/// one). A model that fails is named in the journal; the unit fails if any
/// did, so `appliance-ready.target` is not reached.
pub fn pull_script(appliance: &Appliance, host: &Host) -> Option<String> {
    let inference = inference_sandbox(appliance, host)?;
    // Model names are checked to be `[A-Za-z0-9._:/-]` (model::names), so
    // they need no quoting in the shell or in JSON.
    let models = inference.models.join(" ");
    Some(format!(
        r#"#!/bin/sh
# {STAMP} from the appliance spec; do not edit.
# Pulls the spec's models into Ollama's sandbox at {address}:{port}.
# Usage: pull-models.sh [URL]; the unit appliance-models runs it.
set -u
url="${{1:-http://{address}:{port}}}"
tries=0
until curl -fsS "$url/api/version" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 120 ]; then
    echo "appliance: Ollama at $url did not answer in 120 s; no model pulled" >&2
    exit 1
  fi
  sleep 1
done
failed=""
for model in {models}; do
  echo "appliance: pulling model $model"
  body="{{\"model\": \"$model\", \"stream\": false}}"
  if out=$(curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' \
      -d "$body" "$url/api/pull"); then
    echo "appliance: model $model is ready"
  else
    echo "appliance: model $model failed to pull: $out" >&2
    failed="$failed $model"
  fi
done
if [ -n "$failed" ]; then
  echo "appliance: models not pulled:$failed" >&2
  exit 1
fi
"#,
        address = inference.bind_address,
        port = inference.port,
    ))
}

/// The sandboxes that must run before the appliance is ready. The models
/// are the other half: modules/models.nix adds `appliance-models.service`
/// when it makes that unit, so a host that turns the pull off is not left
/// requiring a unit that does not exist.
fn ready_units(host: &Host) -> Vec<String> {
    host.sandboxes
        .iter()
        .map(|s| format!("docker-{}.service", s.name))
        .collect()
}

/// The host's firewall rules as NixOS spells them: open everywhere, or per
/// interface.
fn firewall(host: &Host) -> Firewall {
    let mut firewall = Firewall {
        tcp: Vec::new(),
        udp: Vec::new(),
        interfaces: BTreeMap::new(),
    };
    for rule in &host.firewall {
        let list = match &rule.interface {
            None if rule.protocol == "udp" => &mut firewall.udp,
            None => &mut firewall.tcp,
            Some(interface) => {
                let key = if rule.protocol == "udp" {
                    "allowedUDPPorts"
                } else {
                    "allowedTCPPorts"
                };
                firewall
                    .interfaces
                    .entry(interface.clone())
                    .or_default()
                    .entry(key)
                    .or_default()
            }
        };
        list.push(rule.port);
    }
    firewall
}

/// Every sandbox as an `oci-containers` entry, the systemd units each
/// waits for, and the directories (tmpfiles rules) they need.
struct Containers {
    tmpfiles: Vec<String>,
    containers: BTreeMap<String, BTreeMap<&'static str, Value>>,
    units: BTreeMap<String, BTreeMap<&'static str, Value>>,
    secret_waits: BTreeMap<String, Value>,
}

/// The unit making webextract's key file, for an agent whose `crawler`
/// reads it (beside its own env file).
fn extract_key_unit(sandbox: &Sandbox) -> Option<String> {
    sandbox
        .env_files
        .iter()
        .any(|f| f == EXTRACT_KEY_ENV)
        .then(|| SERVICE_SECRETS_UNIT.to_string())
}

fn containers(host: &Host, overlay: Option<&str>) -> Containers {
    let mut tmpfiles = vec![
        format!("d {STATE_DIR} 0711 root root -"),
        format!("d {STATE_DIR}/secrets 0711 root root -"),
    ];
    if overlay.is_some() {
        tmpfiles.push(format!("d {WIREGUARD_KEY_DIR} 0700 root root -"));
    }
    let mut containers = BTreeMap::new();
    let mut units = BTreeMap::new();
    let mut secret_waits = BTreeMap::new();
    for sandbox in &host.sandboxes {
        containers.insert(sandbox.name.clone(), container(sandbox, &mut tmpfiles));
        let unit = format!("docker-{}", sandbox.name);
        let deps = if sandbox.agent.is_empty() {
            // A service (Ollama, SearXNG) needs no Matrix secret; it waits
            // for its own secret if it has one, and for the overlay only
            // when it publishes a port on its address.
            let mut deps = vec!["appliance-network.service".to_string()];
            if !sandbox.env_files.is_empty() {
                deps.push(SERVICE_SECRETS_UNIT.to_string());
            }
            // A GPU sandbox's `--device=nvidia.com/gpu=all` resolves only
            // once nixpkgs' CDI generator has written the specs
            // (nixos/modules/services/hardware/nvidia-container-toolkit/default.nix);
            // before, Docker fails with "unresolvable CDI devices".
            if sandbox.gpus {
                deps.push(CDI_GENERATOR_UNIT.to_string());
            }
            unit_deps(deps, overlay.filter(|_| sandbox.publish_on.is_some()))
        } else if host.runs_matrix {
            let mut deps = vec![
                "appliance-network.service".to_string(),
                "appliance-bootstrap.service".to_string(),
            ];
            deps.extend(extract_key_unit(sandbox));
            unit_deps(deps, None)
        } else {
            // Agents on a host without Matrix reach it over the overlay, and
            // their secrets come from the hub by pairing (docs/pairing.md).
            let mut units = vec!["appliance-network.service".to_string()];
            units.extend(extract_key_unit(sandbox));
            let mut deps = unit_deps(units, overlay);
            if let Some(env_file) = sandbox.env_files.first() {
                deps.insert(
                    "unitConfig",
                    nix::value(BTreeMap::from([("ConditionPathExists", env_file)])),
                );
                secret_waits.insert(unit.clone(), secret_wait(&unit, env_file));
            }
            deps
        };
        units.insert(unit, deps);
    }
    server_socket_dirs(&host.sandboxes, &mut tmpfiles);
    tmpfiles.sort();
    tmpfiles.dedup();
    Containers {
        tmpfiles,
        containers,
        units,
        secret_waits,
    }
}

/// A path unit starting `unit` once `env_file` exists.
fn secret_wait(unit: &str, env_file: &str) -> Value {
    nix::value(BTreeMap::from([
        (
            "description",
            nix::value(format!(
                "Start {unit} once its secrets ({env_file}) are fetched from the hub (docs/pairing.md)"
            )),
        ),
        ("wantedBy", nix::value(["multi-user.target"])),
        (
            "pathConfig",
            nix::value(BTreeMap::from([
                ("PathExists", env_file.to_string()),
                ("Unit", format!("{unit}.service")),
            ])),
        ),
    ]))
}

/// A code sandbox's own socket directory that no sandbox consumes (the
/// warden's approval broker does, as root): root's alone, 0700.
fn server_socket_dirs(sandboxes: &[Sandbox], tmpfiles: &mut Vec<String>) {
    let binds = || sandboxes.iter().flat_map(|s| &s.binds);
    let host_path = |bind: &crate::model::Bind| match &bind.source {
        BindSource::Host(path) if is_socket_dir(path) => Some(path.clone()),
        _ => None,
    };
    let consumed: Vec<String> = binds().filter(|b| b.read_only).filter_map(host_path).collect();
    for path in binds().filter(|b| !b.read_only).filter_map(host_path) {
        if !consumed.contains(&path) {
            tmpfiles.push(format!("d {path} 0700 root root -"));
        }
    }
}

/// One sandbox's `oci-containers` settings; adds the tmpfiles rule of each
/// socket directory it consumes.
fn container(sandbox: &Sandbox, tmpfiles: &mut Vec<String>) -> BTreeMap<&'static str, Value> {
    let options = run_options(sandbox);
    let mut volumes: Vec<Value> = options.volumes.iter().map(|v| Value::from(v.as_str())).collect();
    for bind in &options.binds {
        volumes.push(match &bind.source {
            // Generated files are copied into the store by the path
            // literal, which takes the place of the source.
            BindSource::Generated(path) => {
                let target = nix::string_content(&bind.volume_arg(""));
                expr(format!("\"${{{}}}{target}\"", nix::path(&format!("../../{path}"))))
            }
            BindSource::Host(path) => {
                // The consumer's side of a socket dir sets its owner.
                if is_socket_dir(path) && bind.read_only {
                    let gid = sandbox.user.split(':').nth(1).unwrap_or("0");
                    tmpfiles.push(format!("d {path} {SOCKET_DIR_MODE:04o} root {gid} -"));
                }
                Value::from(bind.volume_arg(path))
            }
        });
    }
    let image_file = image_file(&sandbox.image);
    let mut container = BTreeMap::new();
    container.insert("image", Value::from(sandbox.image.as_str()));
    container.insert(
        "imageStream",
        expr(format!(
            "import ../../images/{image_file}.nix {{ inherit pkgs; images = applianceImages; }}"
        )),
    );
    container.insert("user", Value::from(options.user.as_str()));
    container.insert("volumes", Value::from(volumes));
    container.insert("environment", nix::value(&options.environment));
    container.insert("environmentFiles", nix::value(&options.env_files));
    container.insert("ports", nix::value(&options.ports));
    container.insert("cmd", nix::value(&options.command));
    container.insert("dependsOn", nix::value(&sandbox.depends_on));
    container.insert("extraOptions", nix::value(&options.flags));
    container
}

/// `appliance.ollama` (modules/ollama.nix), on the host that serves
/// inference as a host service (`sandbox = "host"`).
fn ollama(appliance: &Appliance, host: &Host, overlay: Option<&str>) -> Option<BTreeMap<&'static str, Value>> {
    let inference = appliance
        .inference
        .as_ref()
        .filter(|i| host.runs_inference && i.sandbox.is_none())?;
    // Its ordering: the bridge it listens on and, when it serves the
    // overlay, the WireGuard address (`unit_deps`).
    let mut settings = unit_deps(vec!["appliance-network.service".to_string()], overlay);
    let package = if inference.acceleration == "cuda" {
        "pkgs.ollama-cuda"
    } else {
        "pkgs.ollama"
    };
    settings.insert("enable", Value::from(true));
    settings.insert("package", expr(package));
    settings.insert("address", Value::from(inference.bind_address.to_string()));
    settings.insert("port", Value::from(inference.port));
    settings.insert("models", nix::value(&inference.models));
    Some(settings)
}

/// The sandboxes' bridge on `host`.
pub fn docker_network(appliance: &Appliance, host: &Host) -> DockerNetwork {
    DockerNetwork {
        name: NETWORK_NAME,
        subnet: appliance.network.to_string(),
        gateway: host.network_address.to_string(),
        bridge: BRIDGE_INTERFACE,
        // GCE's network carries 1460-byte packets; Docker's default 1500
        // would drop the sandboxes' large ones.
        mtu: (host.target == Target::Gce).then_some(GCE_MTU),
    }
}

/// `docker network create ...` for the sandboxes' bridge, the command
/// modules/docker-gvisor.nix builds from the same values (tests/egress.rs
/// and the rehearsal run it; tests/flake/modules.rs checks they agree).
pub fn network_create(appliance: &Appliance, host: &Host) -> Vec<String> {
    let network = docker_network(appliance, host);
    let mut create: Vec<String> = vec![
        "docker".into(),
        "network".into(),
        "create".into(),
        "--driver=bridge".into(),
        format!("--subnet={}", network.subnet),
        format!("--gateway={}", network.gateway),
        format!("--opt=com.docker.network.bridge.name={}", network.bridge),
    ];
    if let Some(mtu) = network.mtu {
        create.push(format!("--opt=com.docker.network.driver.mtu={mtu}"));
    }
    create.push(network.name.into());
    create
}

/// The WireGuard interface of a host on the overlay: every other host is a
/// peer once the spec has its public key. A peer with an `endpoint` is
/// dialled (and kept alive through NAT); the others dial in.
fn wireguard(appliance: &Appliance, host: &Host) -> Option<WireGuard> {
    let overlay = appliance.overlay.as_ref()?;
    let address = host.overlay_address?;
    let mut peers = Vec::new();
    let mut unpaired = Vec::new();
    for other in appliance.hosts.values().filter(|h| h.name != host.name) {
        let Some(other_address) = other.overlay_address else {
            continue;
        };
        let Some(key) = &other.wireguard_public_key else {
            unpaired.push(other.name.clone());
            continue;
        };
        let mut peer = BTreeMap::new();
        peer.insert("publicKey", Value::from(key.as_str()));
        peer.insert("allowedIPs", nix::value([format!("{other_address}/32")]));
        if let Some(endpoint) = &other.endpoint {
            peer.insert("endpoint", Value::from(endpoint_with_port(endpoint)));
            peer.insert("persistentKeepalive", Value::from(25));
        }
        peers.push(peer);
    }
    Some(WireGuard {
        enable: true,
        interface: OVERLAY_INTERFACE,
        address: format!("{address}/{}", overlay.prefix),
        port: WIREGUARD_PORT,
        key_file: format!("{WIREGUARD_KEY_DIR}/private.key"),
        peers,
        unpaired,
        nonlocal_bind: host.runs_matrix,
    })
}

/// `host` or `host:port`; WireGuard needs the port, so the default is added.
fn endpoint_with_port(endpoint: &str) -> String {
    let colons = endpoint.matches(':').count();
    if endpoint.starts_with('[') {
        if endpoint.contains("]:") {
            endpoint.to_string()
        } else {
            format!("{endpoint}:{WIREGUARD_PORT}")
        }
    } else if colons >= 2 {
        // A bare IPv6 address.
        format!("[{endpoint}]:{WIREGUARD_PORT}")
    } else if colons == 1 {
        endpoint.to_string()
    } else {
        format!("{endpoint}:{WIREGUARD_PORT}")
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_with_port;

    #[test]
    fn endpoints_get_the_wireguard_port_when_they_have_none() {
        assert_eq!(endpoint_with_port("hub.example.org"), "hub.example.org:51820");
        assert_eq!(endpoint_with_port("203.0.113.7:4500"), "203.0.113.7:4500");
        assert_eq!(endpoint_with_port("2001:db8::1"), "[2001:db8::1]:51820");
        assert_eq!(endpoint_with_port("[2001:db8::1]:4500"), "[2001:db8::1]:4500");
    }
}
