//! The bootstrap plan's schema: written by `appliance generate`
//! (`render::plan` builds it from the model), read by `appliance
//! bootstrap` and the warden on the Matrix host. It names every account,
//! room and secret file, never a secret value. It imports nothing above the
//! foundation (docs/architecture.md, "Layers").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped whenever a field changes meaning; bootstrap refuses other versions.
/// 2: secret paths are relative to `state_dir`; Synapse's secrets and the
/// bootstrap's own account are named in the plan. 4: the ops room
/// (`ops_room`, the warden's, admins only). 5: each agent's `tool_log`,
/// the Matrix host's `sandboxes` and `proxy_log`, which the warden reads.
/// 6: egress grants (`grants`, each agent's `egress_grants`). 7: code
/// execution approvals (each agent's `code_approval`).
pub const PLAN_SCHEMA: u32 = 7;

/// Where the appliance keeps state and runtime secrets on every host: the
/// `state_dir` of every plan and pairing config the generator writes, and
/// the on-host tools' default (the audit trail lives under it).
pub const STATE_DIR: &str = "/var/lib/appliance";

/// Localpart of the ops room's alias: the warden's notices, admins only.
pub const OPS_ROOM_LOCALPART: &str = "appliance_ops";

/// The uid and gid of NixOS's `matrix-synapse` user and group
/// (`ids.uids.matrix-synapse` in nixpkgs' `nixos/modules/misc/ids.nix`).
/// Synapse reads its secrets as this user.
pub const NIXOS_SYNAPSE_ID: u32 = 224;

/// Parent (relative to the state dir) of the secrets that belong to no
/// agent: Synapse's, the bootstrap's own, the human admins'. Agents' live in
/// `secrets/<agent>`, and agent names start with a letter, so no agent can
/// ever be given (and mount) one of these directories.
pub const HOST_SECRETS: &str = "secrets/_host";

/// Localpart of the non-human server-admin account that creates the rooms.
pub const BOOTSTRAP_LOCALPART: &str = "appliance";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub schema: u32,
    pub appliance: String,
    pub homeserver: Homeserver,
    /// Absolute; every other path in the plan is relative to it, so
    /// `--state-dir` moves all of them at once.
    pub state_dir: String,
    /// Synapse's own secrets, created before Synapse first starts.
    pub synapse: SynapseSecrets,
    /// The account bootstrap itself uses to create rooms and invite members.
    pub bootstrap_account: BootstrapAccount,
    pub accounts: Vec<Account>,
    pub rooms: Vec<PlannedRoom>,
    /// The warden's room (`#appliance_ops:<server>`): the spec's admins
    /// only, no agent, invite-only, not federated. Bootstrap creates it
    /// like the other rooms; the warden posts its notices there.
    pub ops_room: PlannedRoom,
    /// The warden's loop breaker: agent messages a room may see without a
    /// human one before its agents are muted; none: `DEFAULT_LOOP_BUDGET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_budget: Option<u32>,
    /// The Matrix host's sandboxes (agents' and services'), whose health
    /// the warden reports, with their bridge addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandboxes: Vec<PlannedSandbox>,
    /// The Matrix host's egress proxy log, when it runs the proxy: the
    /// warden summarises its denials per sandbox and destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_log: Option<String>,
    /// How long the admins' egress grants last (docs/warden.md, "Egress
    /// grants"); none: the built-in defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<GrantTimes>,
}

/// `[matrix] grant-default` and `grant-max`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantTimes {
    pub default_secs: u64,
    pub max_secs: u64,
}

/// What an admin's `!allow` can do for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum EgressGrants {
    /// The Matrix host's proxy reads the host names granted to `sandbox`
    /// from `path` (absolute: squid's configuration names it).
    File { sandbox: String, path: String },
    /// Why no grant can widen this agent's egress.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedSandbox {
    /// Its container's name.
    pub name: String,
    /// Its address on the sandboxes' bridge; none without a network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Agent messages in a row, without a human one, before the warden mutes
/// the room's agents.
pub const DEFAULT_LOOP_BUDGET: u32 = 8;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Homeserver {
    /// Where bootstrap reaches Synapse on the host.
    pub url: String,
    pub server_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynapseSecrets {
    /// Directory of the files below, relative to `state_dir` (0700).
    pub dir: String,
    /// Owner of the directory and files: the user Synapse runs as.
    pub uid: u32,
    pub gid: u32,
    /// File names inside `dir`; the homeserver settings name the same files.
    pub registration_shared_secret: String,
    pub macaroon_secret_key: String,
    pub form_secret: String,
}

impl SynapseSecrets {
    /// The three file names, registration secret first.
    pub fn files(&self) -> [&str; 3] {
        [
            &self.registration_shared_secret,
            &self.macaroon_secret_key,
            &self.form_secret,
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAccount {
    pub localpart: String,
    pub user_id: String,
    pub device_id: String,
    /// Root-only directory (relative to `state_dir`) of the bootstrap's own
    /// secrets: the master key passwords derive from and its access token.
    pub secrets_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum AccountKind {
    /// An agent: gets a token file for its sandbox.
    Agent,
    /// A human admin: gets an initial password file for the operator.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub localpart: String,
    pub user_id: String,
    pub kind: AccountKind,
    pub display_name: String,
    /// Stable, so a rerun never adds a device.
    pub device_id: String,
    /// Directory of this account's secret files (0700), relative to
    /// `state_dir`.
    pub secrets_dir: String,
    /// Owner of the secret files: the uid/gid the agent's sandbox runs as.
    pub uid: u32,
    pub gid: u32,
    /// Extra secrets the agent needs, each generated once: env var -> bytes.
    pub generated_env: BTreeMap<String, u32>,
    /// Env vars of the agent's env file that carry its Matrix access token,
    /// named as the agent reads them (empty for humans).
    pub token_env: Vec<String>,
    /// Env var names under which `<secrets_dir>/env` gets the comma-separated
    /// room IDs (`!id:server`) of the account's rooms, once they exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub room_ids_env: Vec<String>,
    /// Env var names under which `<secrets_dir>/env` gets the ID of the
    /// account's first room (plan order), once it exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub home_room_env: Vec<String>,
    /// Env vars only the operator can provide (e.g. GH_TOKEN), added by hand
    /// to `<secrets_dir>/env`: the bootstrap keeps them when it rewrites the
    /// file and reports those missing; it never invents a value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operator_env: Vec<String>,
    /// Synapse's per-user message rate limit for this account, set through
    /// the admin API; none: Synapse's defaults (human admins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Where the agent's own software records the tool calls it makes; the
    /// warden reads it into the audit trail (none for humans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_log: Option<ToolLog>,
    /// Whether and where `!allow` widens the agent's egress (none for
    /// humans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_grants: Option<EgressGrants>,
    /// The Docker socket the warden's approval broker serves to the agent,
    /// when its code runs only after an admin's approval (`approve` in the
    /// spec); none: no code execution, or none that waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_approval: Option<CodeApproval>,
}

/// Where the warden's approval broker listens for one agent and where it
/// forwards (docs/warden.md, "Code execution approvals"). The socket is
/// root's, of the account's `gid`, 0660.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeApproval {
    /// The code sandbox (`casper-exec`).
    pub sandbox: String,
    /// The socket the agent's sandbox mounts (absolute, on the host).
    pub socket: String,
    /// The code sandbox's own Docker socket (absolute, on the host).
    pub upstream: String,
}

/// An agent's record of its tool calls: a file or directory in one of its
/// sandbox's named volumes, in its kind's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolLog {
    pub format: ToolLogFormat,
    /// The Docker volume.
    pub volume: String,
    /// Relative to the volume's root.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolLogFormat {
    /// Hermes: SQLite, `messages` rows with OpenAI-style `tool_calls`.
    HermesMessages,
    /// OpenClaw: SQLite, `transcript_events` with `toolCall` content.
    OpenclawTranscript,
    /// PicoClaw: a directory of JSON-lines sessions with `tool_calls`.
    PicoclawSessions,
}

/// Synapse's `override_ratelimit` body: integers, and 0 would mean
/// unlimited, which the plan never asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub messages_per_second: u32,
    pub burst_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedRoom {
    pub alias_localpart: String,
    pub alias: String,
    pub name: String,
    pub topic: Option<String>,
    pub federate: bool,
    pub members: Vec<String>,
    /// Power levels above the default 0.
    pub power_levels: BTreeMap<String, u32>,
}

/// Synapse's secrets; the homeserver settings name the same files.
pub fn synapse_secrets() -> SynapseSecrets {
    SynapseSecrets {
        dir: format!("{HOST_SECRETS}/synapse"),
        uid: NIXOS_SYNAPSE_ID,
        gid: NIXOS_SYNAPSE_ID,
        registration_shared_secret: "registration-shared-secret".to_string(),
        macaroon_secret_key: "macaroon-secret-key".to_string(),
        form_secret: "form-secret".to_string(),
    }
}
