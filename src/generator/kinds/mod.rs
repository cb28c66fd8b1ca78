//! What the appliance knows about each agent kind, one module per kind,
//! behind one interface ([`Kind`]). The rest of the code asks the kind of
//! an agent through [`of`] and never matches on [`AgentKind`]; [`ALL`] is
//! the one list of kinds, and its test (`tests.rs`) fails when a kind leaves
//! out any part the appliance, its tests or its docs need.

/// [`Kind::facts`] for a kind module: its [`Facts`] from the statics every
/// kind module names alike (`VERSION`, `SUPPORTS`, `SANDBOX`, `IMAGE`,
/// `PLAN`, `PROOF`), with the kind's id, name and label.
macro_rules! kind_facts {
    ($id:expr, $name:literal, $label:literal) => {
        fn facts(&self) -> &'static $crate::generator::kinds::Facts {
            static FACTS: $crate::generator::kinds::Facts = $crate::generator::kinds::Facts {
                id: $id,
                name: $name,
                label: $label,
                version: VERSION,
                supports: &SUPPORTS,
                sandbox: &SANDBOX,
                image: &IMAGE,
                plan: &PLAN,
                proof: &PROOF,
            };
            &FACTS
        }
    };
}

pub mod hermes;
pub mod openclaw;
pub mod picoclaw;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

use anyhow::Result;

use crate::generator::model::image::ImageLayout;
use crate::generator::model::policy::Request;
use crate::generator::model::{Agent, Permissive, Size, Warning};
use crate::generator::spec::schema::{AgentKind, Tool};
pub use crate::schema::plan::ToolLogFormat;

/// Every kind, in the spec enum's order.
pub static ALL: &[&dyn Kind] = &[&openclaw::OpenClaw, &picoclaw::PicoClaw, &hermes::Hermes];

/// The kind of an agent. Exhaustive, so a new `AgentKind` cannot compile
/// without its module.
pub fn of(kind: AgentKind) -> &'static dyn Kind {
    match kind {
        AgentKind::Openclaw => &openclaw::OpenClaw,
        AgentKind::Picoclaw => &picoclaw::PicoClaw,
        AgentKind::Hermes => &hermes::Hermes,
    }
}

/// One agent kind: what the spec may ask of it, what its sandbox and image
/// need, what its policy loosens or turns off, what the bootstrap writes for
/// it, its native config, and how the tests prove that config.
pub trait Kind: Sync {
    /// The kind's fixed parts; the accessors below read them.
    fn facts(&self) -> &'static Facts;

    fn id(&self) -> AgentKind {
        self.facts().id
    }
    /// As the spec spells it: `openclaw`.
    fn name(&self) -> &'static str {
        self.facts().name
    }
    /// As people write it: `OpenClaw`.
    fn label(&self) -> &'static str {
        self.facts().label
    }
    /// The upstream release the image packages and the tests validate
    /// configs against.
    fn version(&self) -> &'static str {
        self.facts().version
    }
    fn supports(&self) -> &'static Supports {
        self.facts().supports
    }
    fn sandbox(&self) -> &'static SandboxNeeds {
        self.facts().sandbox
    }
    /// The image its sandbox runs.
    fn image(&self) -> &'static ImageLayout {
        self.facts().image
    }
    fn plan(&self) -> &'static PlanEnv {
        self.facts().plan
    }
    fn proof(&self) -> &'static Proof {
        self.facts().proof
    }

    /// Non-secret settings the agent reads from its environment rather than
    /// its config file, beyond [`SandboxNeeds::environment`].
    fn environment(&self, _agent: &Agent, _gateway: Ipv4Addr) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Whether a tool the spec asks for stays on, and the warning that
    /// explains it when it does not (or only partly).
    fn tool(&self, _request: &Request, _tool: Tool) -> ToolPolicy {
        ToolPolicy {
            keep: true,
            warning: None,
        }
    }

    /// The kind's permissive settings (each with its reason) and warnings,
    /// given the tools that stayed on. The common entries
    /// ([`crate::generator::model::policy::common`]: `code-network`, `publish`) are
    /// appended after these unless the kind places them itself.
    fn policy(&self, request: &Request, tools: &[Tool]) -> Notes;

    /// Env vars only the operator can provide (third-party credentials).
    fn operator_env(&self, _skills: &[String]) -> Vec<&'static str> {
        Vec::new()
    }

    /// The native config file ([`SandboxNeeds::config_file`]). `published`:
    /// the spec publishes a port of the agent's sandbox.
    fn config(&self, agent: &Agent, published: bool) -> Result<Vec<u8>>;
}

/// A kind's fixed parts, one static per kind.
pub struct Facts {
    pub id: AgentKind,
    pub name: &'static str,
    pub label: &'static str,
    pub version: &'static str,
    pub supports: &'static Supports,
    pub sandbox: &'static SandboxNeeds,
    pub image: &'static ImageLayout,
    pub plan: &'static PlanEnv,
    pub proof: &'static Proof,
}

/// What the spec may ask of an agent of this kind.
pub struct Supports {
    /// Tools as this appliance wires them.
    pub tools: &'static [Tool],
    pub default_context: u32,
    /// The smallest context window the agent accepts.
    pub min_context: Option<u32>,
    /// The skills it ships with, when it takes no others; `None`: any safe
    /// skill name.
    pub skills: Option<&'static [&'static str]>,
    /// `remote-exec`: commands from chat.
    pub remote_exec: bool,
    /// A gateway the spec may `publish`.
    pub gateway: Option<Gateway>,
}

pub struct Gateway {
    pub port: u16,
    /// What it serves, for messages: "its control UI".
    pub serves: &'static str,
}

/// What the agent's sandbox needs beyond the baseline every sandbox gets.
pub struct SandboxNeeds {
    /// The native config's name under `generated/agents/<agent>/`.
    pub config_file: &'static str,
    /// Where the sandbox mounts it, read-only.
    pub config_target: &'static str,
    /// Defaults for the spec's `memory`, `cpus` and `pids`.
    pub memory: Size,
    pub cpus: f64,
    pub pids: u32,
    pub environment: &'static [(&'static str, &'static str)],
    /// With egress: `None` when the agent must get no proxy variables (its
    /// module says why), else the extra variables it needs besides them.
    pub proxy_env: Option<&'static [(&'static str, &'static str)]>,
}

/// The bootstrap plan's fields for an agent of this kind.
pub struct PlanEnv {
    /// Env names its Matrix token is written under, besides the token file.
    pub token_env: &'static [&'static str],
    /// Env names for the comma-separated IDs of its rooms.
    pub room_ids_env: &'static [&'static str],
    /// Env names for the ID of its first (home) room.
    pub home_room_env: &'static [&'static str],
    /// Secrets the bootstrap generates into its env file: name and length.
    pub generated_env: &'static [(&'static str, u32)],
    /// The events it sends to Synapse per answered mention that Synapse's
    /// message rate limit counts (the reply, and its reactions and
    /// redactions); sizes its `override_ratelimit` (`PlanEnv::rate_limit`).
    pub events_per_reply: u32,
    /// Where it records its tool calls: format, the image volume's name
    /// (`ImageLayout`), the path inside it.
    pub tool_log: (ToolLogFormat, &'static str, &'static str),
}

/// Replies a second, and in a burst, that every agent's Synapse rate limit
/// leaves room for. Synapse refuses what is over it with a 429, and none of
/// the agents' Matrix clients resends a refused event, so a limit that does
/// not fit the agent loses replies (docs/agents.md, "Rate limits"); what
/// stops agents talking among themselves is the warden's loop breaker.
const REPLIES_PER_SECOND: u32 = 2;
const REPLY_BURST: u32 = 30;

impl PlanEnv {
    /// Synapse's `override_ratelimit` for the kind: messages per second,
    /// burst.
    pub fn rate_limit(&self) -> (u32, u32) {
        (
            REPLIES_PER_SECOND * self.events_per_reply,
            REPLY_BURST * self.events_per_reply,
        )
    }
}

/// How the tests prove what the appliance writes for this kind; the
/// registry test checks each item against the repository.
pub struct Proof {
    /// What checks every generated config.
    pub validator: Validator,
    /// The tests in tests/agents.rs: every generated config is accepted,
    /// and a bad one is rejected (the negative twin).
    pub accepts_test: &'static str,
    pub rejects_test: &'static str,
    /// Its entry in nix/sources.json.
    pub sources_key: &'static str,
    /// nix/packages/<package>.nix builds it.
    pub package: &'static str,
    /// How CI gets the real agent.
    pub ci: CiInstall,
}

pub enum Validator {
    /// The agent itself, installed under this directory by the script its
    /// [`CiInstall`] names.
    Installed { dir: &'static str },
    /// A file of this repository: a driver of the agent's own loader, or
    /// its schema written down.
    File { path: &'static str },
}

pub enum CiInstall {
    /// .ci/agents.sh sets `<var>` from nix/sources.json (`scripts/pin`).
    Pinned { var: &'static str },
    /// This script builds it from the Go module that nix/sources.json's
    /// `goModule` of the kind's entry pins, at the kind's version.
    Built { script: &'static str },
    /// Not installed; .ci/agents.sh has a comment naming the kind and why.
    None { why: &'static str },
}

/// A tool the spec asked for, after the kind's policy.
pub struct ToolPolicy {
    pub keep: bool,
    pub warning: Option<Warning>,
}

/// A kind's own permissive settings and warnings.
#[derive(Default)]
pub struct Notes {
    pub permissive: Vec<Permissive>,
    pub warnings: Vec<Warning>,
}

/// The OpenAI-compatible endpoint of an Ollama URL.
fn openai_base(inference_url: &str) -> String {
    format!("{}/v1", inference_url.trim_end_matches('/'))
}

/// The spec spellings of the kinds that pass `filter`, for messages:
/// "hermes", "hermes or picoclaw".
pub fn names_where(filter: impl Fn(&dyn Kind) -> bool) -> String {
    let names: Vec<&str> = ALL.iter().filter(|k| filter(**k)).map(|k| k.name()).collect();
    names.join(" or ")
}

/// A Chromium reason shared by the kinds whose browser runs Chromium.
pub(crate) const CHROMIUM_SANDBOX_REASON: &str = "Chromium's own namespace sandbox cannot start inside gVisor without privileges we \
     do not grant; the gVisor sandbox (no capabilities, read-only root) is the boundary";
