//! The TOML schema of `appliance.toml`, exactly as users write it.
//!
//! Every struct denies unknown keys, and every value a later check may
//! complain about keeps its span so errors can point at file:line:column.
//! Nothing here decides anything: defaults that depend on other parts of the
//! spec are resolved in `model`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// `Display` as the spec spells a value (its serde name: `gce`,
/// `x86_64-linux`, `picoclaw`), so what users read matches what they wrote;
/// `Debug` would print Rust's names (`Gce`, `X86_64Linux`).
macro_rules! display_as_spelled {
    ($($kind:ty),* $(,)?) => {$(
        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(spelling)) => f.write_str(&spelling),
                    // Unreachable for these unit-only enums (a test walks them).
                    _ => Err(std::fmt::Error),
                }
            }
        }
    )*};
}

display_as_spelled!(
    Target,
    Platform,
    System,
    AgentKind,
    Tool,
    Browser,
    CodeExecution,
    CredentialService
);

/// A whole spec file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    pub appliance: ApplianceSection,
    #[serde(default)]
    pub hosts: BTreeMap<Spanned<String>, HostSpec>,
    pub matrix: Spanned<MatrixSpec>,
    pub inference: Option<Spanned<InferenceSpec>>,
    #[serde(default)]
    pub agents: BTreeMap<Spanned<String>, AgentSpec>,
    #[serde(default)]
    pub rooms: BTreeMap<Spanned<String>, RoomSpec>,
    /// The self-hosted backend of the agents' `crawler` tool.
    pub crawler: Option<Spanned<CrawlerSpec>>,
    /// Security lints the operator accepts, each with a written reason.
    pub lints: Option<LintsSpec>,
    /// Backups of the Matrix host's state with restic (docs/backup.md);
    /// none when absent.
    pub backup: Option<Spanned<BackupSpec>>,
}

/// `[backup]`: where restic keeps the encrypted snapshots, when, and for
/// how long. Only paths on the host are named, never a secret's value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackupSpec {
    /// A local absolute path, `sftp:user@host:/path` or
    /// `s3:https://host/bucket/path`.
    pub repository: Spanned<String>,
    /// The file on the host holding the repository's password.
    pub password_file: Spanned<String>,
    /// An env file on the host with the remote's credentials
    /// (`AWS_ACCESS_KEY_ID`, ...).
    pub environment_file: Option<Spanned<String>>,
    /// When to back up: a systemd `OnCalendar` expression; `daily` when absent.
    pub schedule: Option<Spanned<String>>,
    pub keep_daily: Option<Spanned<u32>>,
    pub keep_weekly: Option<Spanned<u32>>,
    pub keep_monthly: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CrawlerSpec {
    /// `searxng` (default): a SearXNG sandbox on each host whose agents have
    /// the `crawler` tool; `off`: none, and the tool stays off.
    pub backend: Option<Spanned<CrawlerBackend>>,
    /// `webextract` (default): the appliance's own page extraction service
    /// beside SearXNG, for Hermes' `web_extract`; `off`: search only.
    pub extract: Option<Spanned<ExtractBackend>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtractBackend {
    #[default]
    Webextract,
    Off,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrawlerBackend {
    #[default]
    Searxng,
    Off,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LintsSpec {
    /// Lint code -> why this appliance accepts it.
    #[serde(default)]
    pub allow: BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApplianceSection {
    pub name: Spanned<String>,
    /// IPv4 subnet of the Docker network the sandboxes share on every host.
    pub network: Option<Spanned<String>>,
    /// IPv4 subnet of the WireGuard link between hosts.
    pub overlay: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A Google Compute Engine VM image.
    Gce,
    /// A Raspberry Pi 4 SD card image.
    Rpi4,
    /// An existing NixOS host that imports the generated module.
    Nixos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    Systrap,
    Kvm,
    Ptrace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    #[serde(rename = "x86_64-linux")]
    X86_64Linux,
    #[serde(rename = "aarch64-linux")]
    Aarch64Linux,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HostSpec {
    pub target: Spanned<Target>,
    /// Only for `target = "nixos"`; GCE is x86_64 and the Pi aarch64.
    pub system: Option<Spanned<System>>,
    /// gVisor platform for every sandbox on this host.
    pub platform: Option<Spanned<Platform>>,
    pub gpu: Option<Spanned<GpuSpec>>,
    /// SSH public keys allowed to log in as the admin user.
    #[serde(default)]
    pub ssh_keys: Vec<Spanned<String>>,
    /// WireGuard public key of this host (its private key never leaves it).
    pub wireguard_public_key: Option<Spanned<String>>,
    /// Address other hosts use to reach this one's WireGuard endpoint.
    pub endpoint: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuVendor {
    Nvidia,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverCapability {
    Compute,
    Utility,
    Graphics,
    Video,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GpuSpec {
    pub vendor: Spanned<GpuVendor>,
    pub model: Spanned<String>,
    pub count: Spanned<u32>,
    /// nvproxy driver capabilities; `compute` and `utility` when absent.
    pub driver_capabilities: Option<Vec<Spanned<DriverCapability>>>,
    /// Memory of one GPU (`24g`), for the VRAM check; known models have a
    /// default.
    pub vram: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MatrixSpec {
    pub host: Spanned<String>,
    pub server_name: Spanned<String>,
    pub port: Option<Spanned<u16>>,
    /// Federation with other homeservers; off unless asked.
    #[serde(default)]
    pub federation: bool,
    /// Synapse's database: PostgreSQL (default) or SQLite.
    #[serde(default)]
    pub database: SynapseDatabase,
    /// Human admins, as Matrix localparts on this server.
    #[serde(default)]
    pub admins: Vec<Spanned<String>>,
    /// The warden's loop breaker: agent messages a room may see without a
    /// human one before the warden mutes its agents.
    pub loop_budget: Option<Spanned<u32>>,
    /// How long an admin's `!allow` lasts when it names no duration
    /// (`30m`, `2h`, `1d`); docs/warden.md, "Egress grants".
    pub grant_default: Option<Spanned<String>>,
    /// The longest grant an admin may give.
    pub grant_max: Option<Spanned<String>>,
}

/// `[matrix] database`: where Synapse keeps its state. Synapse's own docs
/// call SQLite fit for testing only, so PostgreSQL is the default; SQLite
/// stays for a spec that asks for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SynapseDatabase {
    #[default]
    Postgresql,
    Sqlite,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InferenceSpec {
    pub host: Spanned<String>,
    pub port: Option<Spanned<u16>>,
    pub models: Vec<Spanned<String>>,
    /// Where Ollama runs: its own gVisor sandbox (default) or the host.
    pub sandbox: Option<Spanned<InferenceSandbox>>,
    /// Model name -> the memory it needs loaded (`28g`), for models the
    /// VRAM check does not know.
    #[serde(default)]
    pub sizes: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `[inference] sandbox`: where Ollama runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InferenceSandbox {
    /// Its own gVisor sandbox on the appliance bridge (nvproxy on GPU hosts).
    #[default]
    Gvisor,
    /// nixpkgs' `services.ollama` on the host, outside gVisor.
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    Openclaw,
    Picoclaw,
    Hermes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    /// A headless browser inside the agent's sandbox.
    Browser,
    /// Web search and page extraction.
    Crawler,
    /// Running code the model writes.
    Code,
    /// Fetching single web pages.
    WebFetch,
    /// Shell commands inside the agent's own sandbox.
    Exec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Browser {
    Chromium,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeExecution {
    /// A dedicated Docker daemon inside its own gVisor sandbox.
    DockerInGvisor,
}

/// An action of an agent that waits for an admin's approval in the ops
/// room (docs/warden.md, "Code execution approvals").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Approval {
    /// Creating a container, an exec or an image build through the Docker
    /// socket of its code sandbox.
    CodeExecution,
}

/// A service whose credential the egress proxy adds to the agent's
/// requests (docs/spec.md, `credentials`): the sandbox holds a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialService {
    /// `GH_TOKEN`, added on the GitHub API hosts.
    Github,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentSpec {
    pub kind: Spanned<AgentKind>,
    pub host: Spanned<String>,
    /// An Ollama model from `[inference].models`; the first one when absent.
    pub model: Option<Spanned<String>>,
    /// Context window in tokens.
    pub context: Option<Spanned<u32>>,
    #[serde(default)]
    pub tools: Vec<Spanned<Tool>>,
    #[serde(default)]
    pub skills: Vec<Spanned<String>>,
    pub browser: Option<Spanned<Browser>>,
    pub code_execution: Option<Spanned<CodeExecution>>,
    /// Let chat messages run shell commands (PicoClaw `allow_remote`).
    pub remote_exec: Option<Spanned<bool>>,
    /// Let sandboxed code reach the network (code execution containers).
    pub code_network: Option<Spanned<bool>>,
    /// Size of the RAM-backed `/var/lib/docker` of the code sandbox, e.g. "4g".
    pub code_storage: Option<Spanned<String>>,
    /// Memory limit, e.g. "4g".
    pub memory: Option<Spanned<String>>,
    pub cpus: Option<Spanned<f64>>,
    pub pids: Option<Spanned<u32>>,
    /// GPUs for this agent's own sandbox (nvproxy).
    pub gpu: Option<Spanned<bool>>,
    /// Host ports to publish the agent's gateway on (none by default).
    #[serde(default)]
    pub publish: Vec<Spanned<u16>>,
    /// What the agent may reach beyond the appliance's own services:
    /// `"none"`, `"web"` or a list of domains (see docs/spec.md).
    pub egress: Option<Spanned<EgressSpec>>,
    /// Whether the spec's admins may widen a domain-list `egress` for a
    /// while from the ops room (`!allow`); on unless `false`.
    pub grants: Option<Spanned<bool>>,
    /// Which actions wait for an admin's approval; by default every action
    /// the agent has (`code-execution` with `code-execution` set).
    pub approve: Option<Spanned<Vec<Spanned<Approval>>>>,
    /// Credentials the egress proxy adds for the agent, by service: the
    /// path on the agent's host of the file holding the real one. The
    /// sandbox gets a placeholder (docs/spec.md).
    #[serde(default)]
    pub credentials: BTreeMap<Spanned<CredentialService>, Spanned<String>>,
}

/// `egress = "none" | "web" | ["domain", ...]`, as written. Deserialized by
/// hand rather than `#[serde(untagged)]`, which buffers the value and loses
/// the spans of the entries: each domain keeps its own, so an error points
/// at the entry, not the whole list.
#[derive(Debug)]
pub enum EgressSpec {
    Keyword(String),
    Domains(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for EgressSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EgressVisitor;

        impl<'de> serde::de::Visitor<'de> for EgressVisitor {
            type Value = EgressSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"none\", \"web\" or a list of domains")
            }

            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<EgressSpec, E> {
                Ok(EgressSpec::Keyword(word.to_string()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<EgressSpec, A::Error> {
                let mut domains = Vec::new();
                while let Some(domain) = seq.next_element()? {
                    domains.push(domain);
                }
                Ok(EgressSpec::Domains(domains))
            }
        }

        deserializer.deserialize_any(EgressVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoomSpec {
    pub name: Option<Spanned<String>>,
    pub topic: Option<Spanned<String>>,
    /// Agent names, or `@localpart` for human admins.
    pub members: Vec<Spanned<String>>,
    pub federate: Option<Spanned<bool>>,
}

impl AgentSpec {
    pub fn remote_exec(&self) -> bool {
        self.remote_exec.as_ref().is_some_and(|v| *v.get_ref())
    }

    pub fn code_network(&self) -> bool {
        self.code_network.as_ref().is_some_and(|v| *v.get_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agent kinds: `kinds::tests` checks each against its registry name.
    #[test]
    fn values_display_as_the_spec_spells_them() {
        let shown: Vec<String> = [
            Target::Gce.to_string(),
            Target::Rpi4.to_string(),
            Target::Nixos.to_string(),
            Platform::Systrap.to_string(),
            Platform::Kvm.to_string(),
            Platform::Ptrace.to_string(),
            System::X86_64Linux.to_string(),
            System::Aarch64Linux.to_string(),
            Tool::Browser.to_string(),
            Tool::Crawler.to_string(),
            Tool::Code.to_string(),
            Tool::WebFetch.to_string(),
            Tool::Exec.to_string(),
            Browser::Chromium.to_string(),
            CodeExecution::DockerInGvisor.to_string(),
            CredentialService::Github.to_string(),
        ]
        .into();
        assert_eq!(
            shown,
            [
                "gce",
                "rpi4",
                "nixos",
                "systrap",
                "kvm",
                "ptrace",
                "x86_64-linux",
                "aarch64-linux",
                "browser",
                "crawler",
                "code",
                "web-fetch",
                "exec",
                "chromium",
                "docker-in-gvisor",
                "github",
            ]
        );
    }
}
