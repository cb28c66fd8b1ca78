//! The option values of one host (`hosts/<host>/options.json`): SSH,
//! firewall, Docker with the gVisor runtimes, Synapse, Ollama, the bootstrap
//! units and every sandbox.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::images::image_file;
use super::values::{self, GeneratedFile, Setting, value};
use super::{Tree, json_about};
use crate::generator::docker::run_options;
use crate::generator::model::services::{EXTRACT_KEY_ENV, EXTRACT_SANDBOX, SEARCH_SANDBOX, SEARCH_SECRET_ENV};
use crate::generator::model::{
    APPROVAL_SOCKET_DIR, Appliance, BRIDGE_INTERFACE, BindSource, DOCKER_SOCKET_FILE, Host, NETWORK_NAME,
    OVERLAY_INTERFACE, SOCKET_DIR_MODE, STATE_DIR, Sandbox, WIREGUARD_PORT, is_socket_dir,
};
use crate::generator::spec::schema::{SynapseDatabase, Target};

/// The oldest gVisor release the hosts may run: arm64 systrap supports the
/// 39-bit address space of Raspberry Pi kernels from release-20260316.0
/// (google/gvisor#12694). Asserted at evaluation (modules/docker-gvisor.nix
/// reads the same `gvisor.minimum` of nix/sources.json as its default, so no
/// host repeats it); nix/sources.json pins the release the overlay builds
/// when nixpkgs is older.
pub const RUNSC_MINIMUM: &str = crate::generator::pins::GVISOR_MINIMUM;

/// NVIDIA drivers the shipped gVisor's nvproxy supports: `runsc nvproxy
/// list-supported-drivers` of release-20260406.0, pinned beside it in
/// nix/sources.json (`gvisor.nvproxyDrivers`, `nvproxyWhy`), whose list is
/// also modules/nvidia.nix's default, so every host gets it without the
/// generated values repeating it. nvproxy needs an exact match.
/// tests/nvproxy.rs checks this against the built runsc and the Go
/// module's source.
pub const NVPROXY_DRIVERS: &[&str] = crate::generator::pins::NVPROXY_DRIVERS;

/// The `nvidiaPackages` attribute GPU hosts use: NVIDIA's data-center driver
/// of the 590 branch (590.48.01 in the nixpkgs of 2026), the one driver that
/// nixpkgs packages with the open kernel module AND the shipped runsc
/// (release-20260406.0) lists. nixpkgs' default (`stable`, 595.x) and the 580
/// long-term branch (`legacy_580`, 580.173.02; gVisor lists it only from
/// release-20260721.0) are not on that list, and nvproxy needs an exact
/// match. The data-center drivers come without nvidia-settings
/// (`useSettings = false`), so modules/nvidia.nix turns that tool off; a
/// headless appliance has no use for it. tests/flake/catalog.rs checks the
/// attribute's version against `NVPROXY_DRIVERS`.
pub const NVIDIA_PACKAGE: &str = "dc_590";

/// Where each host keeps its WireGuard private key, made at first boot.
pub const WIREGUARD_KEY_DIR: &str = "/var/lib/appliance/wireguard";

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

/// `appliance.models` (modules/models.nix): the oneshot that pulls the
/// models into the inference sandbox.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelPull<'a> {
    enable: bool,
    sandbox_unit: String,
    /// Where the host reaches Ollama's API.
    url: String,
    /// The spec's models, pulled in this order.
    names: &'a [String],
}

/// The values of `appliance.synapse` (modules/synapse.nix).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Synapse {
    enable: bool,
    /// `hosts/<host>/synapse.json`.
    settings_file: GeneratedFile,
    /// The PostgreSQL role and database of Synapse, when it uses PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    postgresql: Option<Postgresql>,
    /// `after`, `requires` and, with an overlay, `wants`.
    #[serde(flatten)]
    unit: BTreeMap<&'static str, Value>,
    /// `IPAddressAllow` of the unit; `None` with federation.
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_addresses: Option<Vec<String>>,
}

#[derive(Serialize)]
struct Postgresql {
    enable: bool,
    name: &'static str,
}

/// The values of `appliance.egress` (modules/egress.nix): the nftables
/// tables generated from each sandbox's reach, the proxy, and the
/// sandboxes' resolver on the bridge.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Egress {
    #[serde(skip_serializing_if = "Option::is_none")]
    enable: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inet_table: Option<GeneratedFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge_table: Option<GeneratedFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_config: Option<GeneratedFile>,
    /// The warden's grant files the proxy reads (docs/warden.md).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    grant_files: Vec<String>,
    /// The credentials the proxy adds, by include file (SECURITY.md,
    /// "Credentials at the proxy").
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    credentials: BTreeMap<String, CredentialFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolver: Option<String>,
}

/// One value of `appliance.egress.credentials`: the proxy's include file
/// is `before`, the token read from `tokenFile`, then `after`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CredentialFile {
    token_file: String,
    before: String,
    after: String,
}

/// The unit that makes the appliance CA (modules/egress.nix).
const EGRESS_CA_UNIT: &str = "appliance-egress-ca.service";

/// Every credential the proxy of `host` adds, by the include file the
/// generated proxy configuration names.
fn credential_files(host: &Host) -> BTreeMap<String, CredentialFile> {
    let mut files = BTreeMap::new();
    for sandbox in &host.sandboxes {
        for credential in &sandbox.credentials {
            let (before, after) = super::egress::injection_line(&sandbox.name, credential);
            let file = CredentialFile {
                token_file: credential.token_file.clone(),
                before,
                after,
            };
            files.insert(credential.injection_file(&sandbox.name), file);
        }
    }
    files
}

/// The values of `appliance.nvidia` (modules/nvidia.nix).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Nvidia {
    enable: bool,
    package: &'static str,
    /// A sandbox uses the GPU (CDI specs from the container toolkit).
    container_toolkit: bool,
}

/// A directory of `appliance.directories` (modules/host.nix), root's; its
/// group when not root's (the module's default).
#[derive(Serialize)]
struct Directory {
    mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

impl Directory {
    fn root(mode: u32) -> Directory {
        Directory {
            mode: format!("{mode:04o}"),
            group: None,
        }
    }
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

/// The values of `appliance.firewall` (modules/host.nix).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Firewall {
    #[serde(rename = "allowedTCPPorts")]
    tcp: Vec<u16>,
    #[serde(rename = "allowedUDPPorts")]
    udp: Vec<u16>,
    interfaces: BTreeMap<String, BTreeMap<&'static str, Vec<u16>>>,
}

/// The values of `appliance.docker` (modules/docker-gvisor.nix).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Docker {
    enable: bool,
    /// `hosts/<host>/docker-daemon.json`.
    daemon_settings: GeneratedFile,
    network: DockerNetwork,
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
    unit.insert("requires", value(requires));
    unit
}

/// For a unit that also listens on the overlay besides loopback and the
/// sandboxes' bridge (Synapse, nginx): it starts after the overlay's
/// address is up but does not need it, so Matrix keeps working on this
/// host when WireGuard fails (the host binds the overlay address
/// non-locally: `appliance.wireguard.nonlocalBind`, modules/wireguard.nix).
pub(super) fn unit_deps_overlay_optional(deps: Vec<String>, overlay: Option<&str>) -> BTreeMap<&'static str, Value> {
    let mut unit = overlay_ordering(deps.clone(), overlay);
    unit.insert("requires", value(deps));
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
        unit.insert("wants", value(["network-online.target"]));
    }
    unit.insert("after", value(after));
    unit
}

/// Synapse's database, unit ordering and address filter (SECURITY.md), on
/// the Matrix host.
fn synapse(appliance: &Appliance, host: &Host, overlay: Option<&str>) -> Option<Synapse> {
    if !host.runs_matrix {
        return None;
    }
    Some(Synapse {
        enable: true,
        settings_file: GeneratedFile::new(format!("hosts/{}/synapse.json", host.name)),
        postgresql: (appliance.matrix.database == SynapseDatabase::Postgresql).then_some(Postgresql {
            enable: true,
            name: super::synapse::POSTGRES_NAME,
        }),
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

/// `host`'s options file: its own option values, then `extra` (pairing's,
/// the web client's, the backup's).
pub fn render(appliance: &Appliance, host: &Host, extra: Vec<Setting>, tree: &mut Tree) -> Result<()> {
    let target = serde_json::to_value(host.target)?;
    let system = serde_json::to_value(host.system)?;
    let about = json_about(&format!(
        "The NixOS option values of host `{}` ({}, {}) in appliance `{}`, which the \
         hand-written modules of modules/ map onto nixpkgs (docs/options.md says what each one does); \
         nix/generated.nix makes them a module that applies when `appliance.enable` is set and \
         `appliance.host` names this host. `notes` says why a value is what it is.",
        host.name,
        target.as_str().unwrap_or_default(),
        system.as_str().unwrap_or_default(),
        appliance.name
    ));
    let mut settings = settings(appliance, host);
    settings.extend(extra);
    let text = values::options_file(&about, &settings)?;
    tree.insert(options_path(&host.name), text);
    Ok(())
}

/// Where the options of `host` are, relative to the generated directory.
pub(super) fn options_path(host: &str) -> String {
    format!("hosts/{host}/options.json")
}

/// Every option value of `host`: the machine, its overlay, Docker and
/// egress, Matrix, inference, then the sandboxes (options.json sorts them
/// by key).
fn settings(appliance: &Appliance, host: &Host) -> Vec<Setting> {
    let wireguard = wireguard(appliance, host);
    // Services that bind the overlay address wait for the interface.
    let overlay = wireguard.as_ref().map(|wg| wg.interface);
    let Containers { directories, sandboxes } = containers(host, overlay);
    let mut settings = vec![
        Setting::new("appliance.ssh.authorizedKeys", &host.ssh_keys),
        Setting::new("appliance.firewall", firewall(host)),
        Setting::new("appliance.directories", directories),
    ];
    if let Some(gpu) = &host.gpu {
        let nvidia = Nvidia {
            enable: true,
            package: NVIDIA_PACKAGE,
            container_toolkit: host.sandboxes.iter().any(|s| s.gpus),
        };
        settings.push(
            Setting::new("appliance.nvidia", nvidia).with_notes(vec![format!("NVIDIA {} x{}.", gpu.model, gpu.count)]),
        );
    }
    if let Some(wireguard) = wireguard {
        settings.push(Setting::new("appliance.wireguard", wireguard));
    }
    settings.push(docker(appliance, host));
    settings.extend(egress(host));
    settings.extend(matrix(appliance, host, overlay));
    settings.extend(ollama(appliance, host, overlay).map(|o| Setting::new("appliance.ollama", o)));
    let secrets = service_secrets(host);
    if !secrets.is_empty() {
        settings.push(Setting::new("appliance.serviceSecrets", secrets));
    }
    settings.extend(model_pull(appliance, host).map(|m| Setting::new("appliance.models", m)));
    settings.push(Setting::new("appliance.ready.units", ready_units(host)));
    settings.push(Setting::new("appliance.sandboxes", sandboxes));
    settings
}

/// `appliance.docker`, with why each runtime more permissive than strict
/// is (the profiles of docker-daemon.json: src/generator/render/runtimes.rs).
fn docker(appliance: &Appliance, host: &Host) -> Setting {
    let mut notes = Vec::new();
    for runtime in &host.runtimes {
        let reasons = runtime.reasons();
        if !reasons.is_empty() {
            notes.push(format!("`{}` is more permissive than strict:", runtime.name()));
            notes.extend(reasons.iter().map(|reason| format!("  - {reason}")));
        }
    }
    let docker = Docker {
        enable: true,
        daemon_settings: GeneratedFile::new(format!("hosts/{}/docker-daemon.json", host.name)),
        network: docker_network(appliance, host),
    };
    Setting::new("appliance.docker", docker).with_notes(notes)
}

/// `appliance.egress`, when a sandbox has a network or the host resolves
/// names for the sandboxes.
fn egress(host: &Host) -> Option<Setting> {
    let tables = host.sandboxes.iter().any(|s| s.network.is_some());
    let resolver = host.resolves_names().then(|| host.network_address.to_string());
    if !tables && resolver.is_none() {
        return None;
    }
    let file = |name: &str| tables.then(|| GeneratedFile::new(format!("hosts/{}/{name}", host.name)));
    let egress = Egress {
        enable: tables.then_some(true),
        inet_table: file("firewall-inet.nft"),
        bridge_table: file("firewall-bridge.nft"),
        proxy_config: file("egress-proxy.conf").filter(|_| super::egress::proxy_config(host).is_some()),
        grant_files: host.sandboxes.iter().filter_map(|s| s.grants.clone()).collect(),
        credentials: credential_files(host),
        resolver,
    };
    Some(Setting::new("appliance.egress", egress))
}

/// Synapse and bootstrap, on the Matrix host; the warden follows the
/// bootstrap (modules/warden.nix's default), which a host may turn off.
fn matrix(appliance: &Appliance, host: &Host, overlay: Option<&str>) -> Vec<Setting> {
    let Some(synapse) = synapse(appliance, host, overlay) else {
        return Vec::new();
    };
    vec![
        Setting::new("appliance.synapse", synapse),
        // The warden follows the bootstrap (modules/warden.nix's default).
        Setting::new(
            "appliance.bootstrap",
            BTreeMap::from([
                ("enable", serde_json::json!(true)),
                ("plan", serde_json::json!(GeneratedFile::new("bootstrap/plan.json"))),
            ]),
        ),
    ]
}

/// The inference sandbox of this host, in `gvisor` mode.
fn inference_sandbox<'a>(appliance: &'a Appliance, host: &Host) -> Option<&'a crate::generator::model::Inference> {
    appliance
        .inference
        .as_ref()
        .filter(|i| host.runs_inference && i.sandbox.is_some())
}

/// What modules/pull-models.sh (run by modules/models.nix) pulls, from
/// where: every model through the inference sandbox's API, one at a time.
/// Model names are checked to be `[A-Za-z0-9._:/-]` (model::names).
fn model_pull<'a>(appliance: &'a Appliance, host: &Host) -> Option<ModelPull<'a>> {
    let inference = inference_sandbox(appliance, host)?;
    Some(ModelPull {
        enable: true,
        sandbox_unit: format!("docker-{}.service", inference.sandbox.as_deref().unwrap_or_default()),
        url: format!("http://{}:{}", inference.bind_address, inference.port),
        names: &inference.models,
    })
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

/// Every sandbox as a value of `appliance.sandboxes` (modules/sandboxes.nix:
/// its container and the units it waits for), and the directories
/// (`appliance.directories`, by path) they need.
struct Containers {
    directories: BTreeMap<String, Directory>,
    sandboxes: BTreeMap<String, BTreeMap<&'static str, Value>>,
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

/// The warden's unit (modules/warden.nix).
const WARDEN_UNIT: &str = "appliance-warden.service";

/// The warden's approval broker socket an agent's sandbox mounts (its code
/// runs only after an admin's approval), if it does.
fn approval_socket(sandbox: &Sandbox) -> Option<String> {
    sandbox.binds.iter().find_map(|bind| match &bind.source {
        BindSource::Host(path) if bind.read_only && path.starts_with(&format!("{APPROVAL_SOCKET_DIR}/")) => {
            Some(format!("{path}/{DOCKER_SOCKET_FILE}"))
        }
        _ => None,
    })
}

/// An agent whose Docker is the warden's approval broker starts after the
/// warden, and only once the broker's socket exists (a path unit starts it
/// then): Hermes checks its Docker backend when it starts and, finding no
/// socket, offers no `terminal` tool at all (seen in the rehearsal).
fn wait_for_the_broker(unit: &mut BTreeMap<&'static str, Value>, mut after: Vec<String>, socket: String) {
    after.push(WARDEN_UNIT.to_string());
    unit.insert("after", value(after));
    unit.insert("waitFor", Value::from(socket.as_str()));
}

/// The unit making the appliance CA, for a sandbox that mounts its
/// certificate (one with a credential the proxy adds).
fn egress_ca_unit(sandbox: &Sandbox) -> Option<String> {
    (!sandbox.credentials.is_empty()).then(|| EGRESS_CA_UNIT.to_string())
}

fn containers(host: &Host, overlay: Option<&str>) -> Containers {
    let mut directories = BTreeMap::from([
        (STATE_DIR.to_string(), Directory::root(0o711)),
        (format!("{STATE_DIR}/secrets"), Directory::root(0o711)),
    ]);
    if overlay.is_some() {
        directories.insert(WIREGUARD_KEY_DIR.to_string(), Directory::root(0o700));
    }
    let mut sandboxes = BTreeMap::new();
    for sandbox in &host.sandboxes {
        let mut values = container(sandbox, &mut directories);
        let deps = if sandbox.is_service() {
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
            deps.extend(egress_ca_unit(sandbox));
            let mut unit = unit_deps(deps.clone(), None);
            if let Some(socket) = approval_socket(sandbox) {
                wait_for_the_broker(&mut unit, deps, socket);
            }
            unit
        } else {
            // Agents on a host without Matrix reach it over the overlay, and
            // their secrets come from the hub by pairing (docs/pairing.md).
            let mut units = vec!["appliance-network.service".to_string()];
            units.extend(extract_key_unit(sandbox));
            units.extend(egress_ca_unit(sandbox));
            let mut deps = unit_deps(units, overlay);
            // Started once pairing has fetched its secrets (a path unit
            // of modules/sandboxes.nix).
            if let Some(env_file) = sandbox.env_files.first() {
                deps.insert("waitFor", Value::from(env_file.as_str()));
            }
            deps
        };
        values.extend(deps);
        sandboxes.insert(sandbox.name.clone(), values);
    }
    server_socket_dirs(&host.sandboxes, &mut directories);
    Containers { directories, sandboxes }
}

/// A code sandbox's own socket directory that no sandbox consumes (the
/// warden's approval broker does, as root): root's alone, 0700.
fn server_socket_dirs(sandboxes: &[Sandbox], directories: &mut BTreeMap<String, Directory>) {
    let binds = || sandboxes.iter().flat_map(|s| &s.binds);
    let host_path = |bind: &crate::generator::model::Bind| match &bind.source {
        BindSource::Host(path) if is_socket_dir(path) => Some(path.clone()),
        _ => None,
    };
    let consumed: Vec<String> = binds().filter(|b| b.read_only).filter_map(host_path).collect();
    for path in binds().filter(|b| !b.read_only).filter_map(host_path) {
        if !consumed.contains(&path) {
            directories.insert(path, Directory::root(0o700));
        }
    }
}

/// One sandbox's container (`appliance.sandboxes.<name>` but its units);
/// adds each socket directory it consumes to `directories`. Generated
/// files it mounts are `files` (by target, read-only: they come from the
/// store), the rest `volumes`.
fn container(sandbox: &Sandbox, directories: &mut BTreeMap<String, Directory>) -> BTreeMap<&'static str, Value> {
    let options = run_options(sandbox);
    let mut volumes: Vec<String> = options.volumes.clone();
    let mut files = BTreeMap::new();
    for bind in &options.binds {
        match &bind.source {
            BindSource::Generated(path) => {
                // The generator's own binds (model::sandbox, model::services):
                // modules/sandboxes.nix mounts every `files` entry `:ro`, and
                // a second bind to a target would replace the first here.
                assert!(
                    bind.read_only,
                    "bug: {}: generated file {path} bound writable at {}",
                    sandbox.name, bind.target
                );
                let old = files.insert(bind.target.clone(), GeneratedFile::new(path.as_str()));
                assert!(
                    old.is_none(),
                    "bug: {}: two generated files bound at {}",
                    sandbox.name,
                    bind.target
                );
            }
            BindSource::Host(path) => {
                // The consumer's side of a socket dir sets its owner.
                if is_socket_dir(path) && bind.read_only {
                    let gid = sandbox.user.split(':').nth(1).unwrap_or("0");
                    let mut directory = Directory::root(SOCKET_DIR_MODE);
                    directory.group = Some(gid.to_string());
                    directories.insert(path.clone(), directory);
                }
                volumes.push(bind.volume_arg(path));
            }
        }
    }
    let image_file = image_file(&sandbox.image);
    let mut container = BTreeMap::new();
    container.insert("image", Value::from(sandbox.image.as_str()));
    container.insert(
        "imageFile",
        value(GeneratedFile::new(format!("images/{image_file}.json"))),
    );
    container.insert("user", Value::from(options.user.as_str()));
    // The lists and sets left empty are the module's defaults (`[ ]`,
    // `{ }`), not written.
    let lists = [
        ("volumes", value(&volumes)),
        ("files", value(&files)),
        ("environment", value(&options.environment)),
        ("environmentFiles", value(&options.env_files)),
        ("ports", value(&options.ports)),
        ("cmd", value(&options.command)),
        ("dependsOn", value(&sandbox.depends_on)),
    ];
    for (name, list) in lists {
        let empty = list.as_array().is_some_and(Vec::is_empty) || list.as_object().is_some_and(|o| o.is_empty());
        if !empty {
            container.insert(name, list);
        }
    }
    container.insert("extraOptions", value(&options.flags));
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
    // `pkgs.ollama-cuda` instead of `pkgs.ollama` (modules/ollama.nix).
    let cuda = inference.acceleration == crate::generator::model::Acceleration::Cuda;
    settings.insert("enable", Value::from(true));
    settings.insert("cuda", Value::from(cuda));
    settings.insert("address", Value::from(inference.bind_address.to_string()));
    settings.insert("port", Value::from(inference.port));
    settings.insert("models", value(&inference.models));
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
        peer.insert("allowedIPs", value([format!("{other_address}/32")]));
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
    use std::collections::BTreeMap;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::{WARDEN_UNIT, container, containers, endpoint_with_port};
    use crate::generator::model::{Bind, BindSource};
    use crate::test_support::default_spec;

    /// casper's Docker is the warden's approval broker: its unit starts
    /// after the warden and only once the broker's socket exists; an agent
    /// without code execution waits for neither.
    #[test]
    fn an_agent_behind_the_approval_broker_waits_for_its_socket() {
        let appliance = default_spec();
        let built = containers(&appliance.hosts["hub"], None);
        let casper = &built.sandboxes["casper"];
        assert!(casper["after"].to_string().contains(WARDEN_UNIT), "{}", casper["after"]);
        assert_eq!(
            casper["waitFor"].as_str(),
            Some("/run/appliance/approval/casper-exec/docker.sock")
        );
        let balthasar = &built.sandboxes["balthasar"];
        assert!(!balthasar["after"].to_string().contains(WARDEN_UNIT));
        assert!(!balthasar.contains_key("waitFor"));
    }

    /// A generated file is mounted read-only, one per target: a writable
    /// one, or a second at the same target, is a bug, not a silently
    /// read-only or replaced mount.
    #[test]
    fn generated_binds_are_read_only_and_one_per_target() {
        let appliance = default_spec();
        let sandbox = &appliance.hosts["hub"].sandboxes[0];
        let generated = |target: &str, read_only| Bind {
            source: BindSource::Generated("hosts/hub/extra".to_string()),
            target: target.to_string(),
            read_only,
        };
        let with = |bind: Bind| {
            let mut sandbox = sandbox.clone();
            sandbox.binds.push(bind);
            sandbox
        };
        let built = |sandbox| catch_unwind(AssertUnwindSafe(|| container(&sandbox, &mut BTreeMap::new())));
        assert!(built(with(generated("/etc/extra", true))).is_ok());
        assert!(built(with(generated("/etc/extra", false))).is_err());
        let taken = sandbox
            .binds
            .iter()
            .find(|b| matches!(b.source, BindSource::Generated(_)))
            .expect("a sandbox with a generated bind");
        assert!(built(with(generated(&taken.target, true))).is_err());
    }

    /// Every permissive setting explained: the options file carries, under
    /// `notes`, why each runtime more permissive than strict is, beside the
    /// values (JSON has no comments; the loader leaves `notes` out).
    #[test]
    fn the_options_file_explains_each_runtime_more_permissive_than_strict() {
        let appliance = default_spec();
        let tree = crate::generator::render::render(&appliance).unwrap();
        let file: serde_json::Value = serde_json::from_slice(&tree["hosts/hub/options.json"]).unwrap();
        let notes: Vec<&str> = file["notes"]["appliance.docker"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line.as_str().unwrap())
            .collect();
        let mut permissive = 0;
        for runtime in &appliance.hosts["hub"].runtimes {
            let heading = format!("`{}` is more permissive than strict:", runtime.name());
            if runtime.reasons().is_empty() {
                assert!(!notes.contains(&heading.as_str()), "{notes:#?}");
                continue;
            }
            permissive += 1;
            let at = notes
                .iter()
                .position(|l| *l == heading)
                .unwrap_or_else(|| panic!("{heading} in {notes:#?}"));
            for (i, reason) in runtime.reasons().iter().enumerate() {
                assert_eq!(notes[at + 1 + i], format!("  - {reason}"));
            }
        }
        assert_eq!(permissive, 3, "runsc-gpu, runsc-uds-open and runsc-dind: {notes:#?}");
        assert!(file["about"].as_str().unwrap().contains("do not edit"));
    }

    #[test]
    fn endpoints_get_the_wireguard_port_when_they_have_none() {
        assert_eq!(endpoint_with_port("hub.example.org"), "hub.example.org:51820");
        assert_eq!(endpoint_with_port("203.0.113.7:4500"), "203.0.113.7:4500");
        assert_eq!(endpoint_with_port("2001:db8::1"), "[2001:db8::1]:51820");
        assert_eq!(endpoint_with_port("[2001:db8::1]:4500"), "[2001:db8::1]:4500");
    }
}
