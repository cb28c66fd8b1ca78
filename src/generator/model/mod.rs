//! The validated appliance: every default resolved, every cross-reference
//! checked. Renderers read only this, never the TOML.

mod agent_checks;
mod allow;
pub mod backup;
mod build;
pub mod credentials;
pub mod denied;
pub mod egress;
mod firewall;
pub mod image;
mod names;
mod network;
pub mod policy;
mod sandbox;
pub mod services;
mod size;
pub mod vram;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use serde::Serialize;

pub use agent_checks::Limits;
pub use backup::Backup;
pub use build::{PAIRING_PORT, WEB_CLIENT_PORT, WIREGUARD_PORT, build};
pub use credentials::Credential;
pub use egress::{Egress, NEVER_DESTINATIONS, PROXY_ACCESS_LOG, PROXY_PORT, PROXY_WEB_PORTS, Reach, ReachService};
pub use firewall::{BRIDGE_INTERFACE, FirewallRule, NETWORK_NAME, OVERLAY_INTERFACE};
pub use network::Subnet;
pub use sandbox::{
    CHROMIUM_PATH, CODE_RUNNER_IMAGE, MIN_PIDS, RESOLV_CONF, SECRETS_MOUNT, approval_socket_dir, exec_sandbox_name,
    resolv_conf_path, volume_name,
};
pub use services::{EXTRACT_SANDBOX, INFERENCE_SANDBOX, INFERENCE_SLOT, OLLAMA_REGISTRY_DOMAINS, SEARCH_SANDBOX};
pub use size::Size;

use crate::generator::runsc::Profile;
use crate::generator::spec::schema::{
    AgentKind, Approval, Browser, CodeExecution, DriverCapability, InferenceSandbox, Platform, SynapseDatabase, System,
    Target, Tool,
};

/// Where the appliance keeps state and runtime secrets on every host: the
/// plan's schema owns it, since the on-host code reads it too.
pub use crate::schema::plan::STATE_DIR;
/// The file in an agent's secrets directory holding its raw Matrix token.
pub const MATRIX_TOKEN_FILE: &str = "matrix-token";
/// Where per-sandbox sockets live on the host (one directory per socket).
pub const SOCKET_DIR: &str = "/run/appliance/sockets";
/// Mode of each socket directory, owned by root and the consuming agent's
/// group: the inner dockerd (root in its sandbox) creates the socket, the
/// agent (non-root, no capabilities) must be able to enter the directory.
pub const SOCKET_DIR_MODE: u32 = 0o750;
/// Where the warden's approval broker serves an agent's Docker socket (one
/// directory per code sandbox, named as it): what the agent's sandbox
/// mounts instead of the code sandbox's own socket when its code runs only
/// after an admin's approval (docs/warden.md, "Code execution approvals").
pub const APPROVAL_SOCKET_DIR: &str = "/run/appliance/approval";
/// The Docker socket's name in its socket directory.
pub const DOCKER_SOCKET_FILE: &str = "docker.sock";

/// Whether `path` is a socket directory: a code sandbox's own, or the
/// warden's approval broker's for it.
pub fn is_socket_dir(path: &str) -> bool {
    [SOCKET_DIR, APPROVAL_SOCKET_DIR]
        .iter()
        .any(|dir| path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/')))
}

#[derive(Debug, Clone, Serialize)]
pub struct Appliance {
    pub name: String,
    /// The Docker network every host's sandboxes share.
    pub network: Subnet,
    /// The WireGuard link between hosts, when more than one host is used.
    pub overlay: Option<Subnet>,
    pub hosts: BTreeMap<String, Host>,
    pub matrix: Matrix,
    pub inference: Option<Inference>,
    pub agents: BTreeMap<String, Agent>,
    pub rooms: BTreeMap<String, Room>,
    /// Lint code -> the spec's reason for accepting it.
    pub lint_allow: BTreeMap<String, String>,
    /// `[backup]`: restic on the Matrix host; none when the spec has none.
    pub backup: Option<Backup>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub name: String,
    pub target: Target,
    pub system: System,
    pub platform: Platform,
    pub gpu: Option<Gpu>,
    pub ssh_keys: Vec<String>,
    /// This host's address on the appliance network (the bridge gateway).
    pub network_address: Ipv4Addr,
    /// This host's WireGuard address, when hosts are linked.
    pub overlay_address: Option<Ipv4Addr>,
    pub wireguard_public_key: Option<String>,
    pub endpoint: Option<String>,
    /// Holes in this host's firewall, each with its reason.
    pub firewall: Vec<FirewallRule>,
    /// Docker runtimes this host registers, one per profile in use.
    pub runtimes: Vec<Profile>,
    pub sandboxes: Vec<Sandbox>,
    pub runs_matrix: bool,
    pub runs_inference: bool,
}

impl Host {
    /// Whether a sandbox here may ask the bridge's resolver (only those
    /// with `egress = "web"`): then the host runs it and opens port 53.
    pub fn resolves_names(&self) -> bool {
        self.sandboxes
            .iter()
            .flat_map(|s| &s.reach)
            .any(|r| r.service == ReachService::Dns)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Gpu {
    pub vendor: String,
    pub model: String,
    pub count: u32,
    /// Memory of one GPU in bytes, from the spec or the known models.
    pub vram: Option<u64>,
    pub driver_capabilities: Vec<DriverCapability>,
}

#[cfg(test)]
impl Gpu {
    /// `count` NVIDIA GPUs of `model`, with the memory the catalog knows.
    pub fn nvidia(model: &str, count: u32) -> Self {
        Gpu {
            vendor: "nvidia".into(),
            model: model.into(),
            count,
            vram: vram::known_gpu(model),
            driver_capabilities: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    pub host: String,
    pub server_name: String,
    pub port: u16,
    pub federation: bool,
    /// Synapse's database.
    pub database: SynapseDatabase,
    /// Human admins' user ids.
    pub admins: Vec<String>,
    /// Agent messages in a room without a human one before the warden
    /// mutes the room's agents (docs/warden.md).
    pub loop_budget: u32,
    /// How long an admin's `!allow` lasts without a duration, and at most,
    /// in seconds (docs/warden.md, "Egress grants").
    pub grant_default: u64,
    pub grant_max: u64,
    /// Addresses Synapse listens on: loopback and where sandboxes reach it.
    pub bind_addresses: Vec<Ipv4Addr>,
    /// The admins' web client on the Matrix host.
    pub web_client: WebClient,
    /// Where the pairing server listens (the Matrix host's overlay
    /// address), when agents on other hosts need their credentials.
    pub pairing: Option<std::net::SocketAddrV4>,
}

/// Cinny, served by nginx on the Matrix host for the human admins: on
/// loopback (reached through `ssh -L`) and on the overlay, never on a
/// public interface.
#[derive(Debug, Clone, Serialize)]
pub struct WebClient {
    pub client: &'static str,
    pub port: u16,
    pub listen: Vec<Ipv4Addr>,
    /// The homeserver the client is locked to, as the admin's browser
    /// reaches it: through the same host and port as the client itself
    /// (nginx proxies `/_matrix` to Synapse on loopback).
    pub homeserver_path: &'static str,
}

/// What Ollama computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acceleration {
    /// The host's NVIDIA GPUs (`ollama-cuda`, nvproxy in the sandbox).
    Cuda,
    /// No GPU.
    Cpu,
}

impl std::fmt::Display for Acceleration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acceleration::Cuda => "cuda",
            Acceleration::Cpu => "cpu",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Inference {
    pub host: String,
    pub port: u16,
    pub models: Vec<String>,
    /// CUDA when the host has NVIDIA GPUs, CPU otherwise.
    pub acceleration: Acceleration,
    /// Where Ollama runs: its own gVisor sandbox, or the host (`sandbox = "host"`).
    pub mode: InferenceSandbox,
    /// The sandbox Ollama runs in, in `gvisor` mode.
    pub sandbox: Option<String>,
    /// Where this host's sandboxes reach Ollama: the sandbox's fixed address
    /// on the bridge, or (host mode) the one address the host service
    /// listens on (`OLLAMA_HOST` takes one).
    pub bind_address: Ipv4Addr,
    /// The overlay address other hosts' agents reach Ollama at, when any
    /// agent is on another host (in `gvisor` mode the sandbox's port is
    /// published on that address only).
    pub overlay_address: Option<Ipv4Addr>,
    /// The memory each model needs loaded, in bytes, when known (the table
    /// in `model::vram` or the spec's `sizes`).
    pub sizes: BTreeMap<String, Option<u64>>,
    /// Notes for `appliance check`: the VRAM estimate, `sandbox = "host"`.
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    pub name: String,
    pub kind: AgentKind,
    pub host: String,
    pub user_id: String,
    pub model: Option<String>,
    pub context: u32,
    pub tools: Vec<Tool>,
    pub skills: Vec<String>,
    pub browser: Option<Browser>,
    pub code_execution: Option<CodeExecution>,
    pub remote_exec: bool,
    pub code_network: bool,
    /// URLs as seen from inside the agent's sandbox.
    pub homeserver_url: String,
    pub inference_url: Option<String>,
    /// The search backend (SearXNG on the agent's host) of its `crawler`
    /// tool, as seen from inside its sandbox.
    pub search_url: Option<String>,
    /// The same, as an address, for the firewall.
    pub search_address: Option<SocketAddrV4>,
    /// The extraction backend (webextract on the agent's host) of its
    /// `crawler` tool, as seen from inside its sandbox.
    pub extract_url: Option<String>,
    /// The same, as an address, for the firewall.
    pub extract_address: Option<SocketAddrV4>,
    /// The same two services as addresses, for the firewall and the proxy's
    /// exceptions.
    pub matrix_address: SocketAddrV4,
    pub inference_address: Option<SocketAddrV4>,
    /// What the agent may reach beyond them (`egress` in the spec).
    pub egress: Egress,
    /// Whether the admins may widen a domain-list `egress` for a while
    /// (`grants` in the spec; docs/warden.md, "Egress grants").
    pub grants: bool,
    /// Actions that wait for an admin's approval in the ops room (`approve`
    /// in the spec; by default `code-execution` when the agent has it).
    pub approve: Vec<Approval>,
    /// Credentials the egress proxy adds for it (`credentials` in the
    /// spec); its sandbox holds only their placeholders.
    pub credentials: Vec<Credential>,
    /// The egress proxy's URL, when `egress` is not `none`.
    pub egress_proxy: Option<String>,
    /// Users the agent answers: appliance admins.
    pub allowed_users: Vec<String>,
    /// The spec's admins (`[matrix] admins`, full user ids): those of
    /// `allowed_users` who may approve what the agent's own software asks
    /// approval for (OpenClaw's exec approvals).
    pub admins: Vec<String>,
    /// Room aliases the agent joins.
    pub rooms: Vec<String>,
    /// Host directory with this agent's runtime secrets.
    pub secrets_dir: String,
    pub sandbox: String,
    /// The Matrix device the bootstrap logs this agent in as; stable, so a
    /// rerun never adds a device.
    pub device_id: String,
    /// Settings of the agent's own config that loosen a default, each with
    /// why; everything not listed here is the agent's strict setting.
    pub permissive: Vec<Permissive>,
    /// What the spec asked for that this appliance turns off or cannot
    /// wire, each with a stable code and why. `appliance check` prints them.
    pub warnings: Vec<Warning>,
    /// The spec's sizes for its sandboxes, parsed once by the checks
    /// (the sandboxes show the resolved ones).
    #[serde(skip)]
    pub limits: Limits,
}

impl Agent {
    /// The credentials only the operator has that go into the agent's env
    /// file by hand: its kind's, less those the egress proxy adds.
    pub fn operator_env(&self) -> Vec<&'static str> {
        crate::generator::kinds::of(self.kind)
            .operator_env(&self.skills)
            .into_iter()
            .filter(|var| !self.credentials.iter().any(|c| c.variable == *var))
            .collect()
    }
}

/// One loosened setting in an agent's native config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permissive {
    /// The setting, as the agent's config spells it.
    pub setting: String,
    pub reason: String,
}

/// Something the spec asked for that is off, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Stable, for tools and docs: `agent-<what>`.
    pub code: &'static str,
    pub message: String,
}

/// Reads, parses and validates a spec: the model of the file at `path`.
pub fn load(path: &std::path::Path) -> anyhow::Result<Appliance> {
    let source = crate::generator::spec::read(path)?;
    let spec = crate::generator::spec::parse(&source)?;
    Ok(build(&source, &spec)?)
}

/// The Matrix device id of an account, from its localpart.
pub fn device_id(localpart: &str) -> String {
    format!("APPLIANCE_{}", localpart.to_ascii_uppercase().replace('-', "_"))
}

#[derive(Debug, Clone, Serialize)]
pub struct Room {
    pub name: String,
    pub alias: String,
    pub display_name: String,
    pub topic: Option<String>,
    pub federate: bool,
    pub members: Vec<RoomMember>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoomMember {
    pub user_id: String,
    pub role: MemberRole,
    pub power_level: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberRole {
    Admin,
    Agent,
}

/// One gVisor container and every option it runs with.
#[derive(Debug, Clone, Serialize)]
pub struct Sandbox {
    pub name: String,
    pub purpose: String,
    /// The agent this sandbox belongs to; `None` for the appliance's own
    /// services (Ollama, the search and extraction backends). Serialized as
    /// before this was typed: the name, or `""` for a service.
    #[serde(serialize_with = "name_or_empty")]
    pub agent: Option<String>,
    pub image: String,
    /// The Docker runtime (`Profile::name`) this sandbox runs under.
    pub runtime: String,
    pub profile: Profile,
    /// Why the runtime is more than strict; empty for strict.
    pub runtime_reasons: Vec<String>,
    pub user: String,
    /// Why the sandbox runs as root, when it does.
    pub root_reason: Option<String>,
    pub read_only_root: bool,
    pub tmpfs: Vec<Tmpfs>,
    pub volumes: Vec<Volume>,
    pub binds: Vec<Bind>,
    pub cap_add: Vec<String>,
    pub no_new_privileges: bool,
    pub pids_limit: u32,
    pub memory: Size,
    pub cpus: String,
    pub shm_size: Option<Size>,
    pub environment: BTreeMap<String, String>,
    /// Env files written on the host at runtime (secrets).
    pub env_files: Vec<String>,
    /// `None` for no network at all.
    pub network: Option<SandboxNetwork>,
    /// The egress policy the proxy applies to this sandbox's address.
    pub egress: Egress,
    /// Credentials the proxy adds to its requests (an agent's own sandbox
    /// only); the sandbox holds their placeholders.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    /// The file of host names the admins granted it for a while, which
    /// the proxy reads besides its `egress` list: only an agent's own
    /// domain-list sandbox on the Matrix host, whose warden writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<String>,
    /// Everything this sandbox may connect to; the firewall allows exactly
    /// this from its address. Empty without a network.
    pub reach: Vec<Reach>,
    /// Host ports published to the sandbox's gateway port.
    pub publish: Vec<u16>,
    /// The one host address the published ports bind to; every address
    /// when `None`.
    pub publish_on: Option<Ipv4Addr>,
    /// The port the agent's gateway listens on inside the sandbox.
    pub gateway_port: Option<u16>,
    pub gpus: bool,
    pub command: Vec<String>,
    pub depends_on: Vec<String>,
}

impl Sandbox {
    /// Whether this is one of the appliance's own services, not an agent's.
    pub fn is_service(&self) -> bool {
        self.agent.is_none()
    }
}

fn name_or_empty<S: serde::Serializer>(name: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(name.as_deref().unwrap_or_default())
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxNetwork {
    pub name: String,
    pub address: Ipv4Addr,
    /// The resolver the sandbox uses: the host's forwarder on the bridge,
    /// since gVisor cannot reach Docker's embedded DNS on this network. It
    /// reaches the sandbox as a generated resolv.conf (`RESOLV_CONF`).
    pub dns: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tmpfs {
    pub target: String,
    pub size: Size,
    pub mode: String,
    /// `(uid, gid)` owning the tmpfs' root, when not root.
    pub owner: Option<(u32, u32)>,
    /// `exec` or `noexec`, from the image's `Writable::exec`.
    pub exec: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    pub name: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bind {
    pub source: BindSource,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "kebab-case")]
pub enum BindSource {
    /// A generated file, relative to the generated tree; lands in the Nix store.
    Generated(String),
    /// A path on the host that exists only at runtime (secrets, sockets).
    Host(String),
}

impl Appliance {
    /// The sandbox with this name, wherever it runs.
    pub fn sandbox(&self, name: &str) -> Option<(&Host, &Sandbox)> {
        self.hosts
            .values()
            .find_map(|host| host.sandboxes.iter().find(|s| s.name == name).map(|s| (host, s)))
    }
}
