//! OpenClaw `openclaw.json`. OpenClaw's schema is strict (an unknown key
//! stops the gateway), so every struct here mirrors keys its schema knows;
//! tests/agents.rs has OpenClaw 2026.9.6 and its Matrix plugin validate
//! every generated file.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{MATRIX_TOKEN_FILE, SECRETS_MOUNT};
use crate::generator::model::{Agent, CHROMIUM_PATH};
use crate::generator::spec::schema::Tool;

/// OpenClaw's gateway port, also the control UI's.
pub const GATEWAY_PORT: u16 = 18789;
/// Where the agent's workspace lives: inside its state volume.
const WORKSPACE: &str = "/home/node/.openclaw/workspace";
/// The SecretRef provider that reads the Matrix token file.
const MATRIX_TOKEN_PROVIDER: &str = "appliance-matrix-token";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    gateway: Gateway,
    secrets: Secrets,
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<Models>,
    agents: Agents,
    messages: Messages,
    channels: Channels,
    #[serde(skip_serializing_if = "Option::is_none")]
    browser: Option<Browser>,
    plugins: Plugins,
    tools: Tools,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Gateway {
    mode: &'static str,
    port: u16,
    bind: &'static str,
    auth: GatewayAuth,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GatewayAuth {
    mode: &'static str,
    token: SecretRef,
}

/// OpenClaw's reference to a secret it resolves at runtime.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretRef {
    source: &'static str,
    provider: &'static str,
    id: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Secrets {
    providers: BTreeMap<&'static str, SecretProvider>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretProvider {
    source: &'static str,
    path: String,
    mode: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Models {
    /// Only the providers listed here: no implicit discovery.
    mode: &'static str,
    providers: BTreeMap<&'static str, ModelProvider>,
    /// Off: OpenClaw would fetch catalog.openclaw.ai's model catalog; the
    /// appliance's models are the ones listed here.
    catalog_refresh: Enabled,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ModelProvider {
    base_url: String,
    /// Ollama needs no key; OpenClaw documents this marker for local hosts.
    api_key: &'static str,
    api: &'static str,
    timeout_seconds: u32,
    models: Vec<Model>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Model {
    id: String,
    name: String,
    context_window: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Agents {
    defaults: AgentDefaults,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentDefaults {
    workspace: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<AgentModel>,
    sandbox: ToolSandbox,
    heartbeat: Heartbeat,
}

/// How OpenClaw handles messages.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Messages {
    queue: Queue,
}

/// The queue of a session's messages that arrive while it answers (one
/// session per room). OpenClaw's default cap is 20: past it the oldest are
/// dropped, folded into an overflow summary, and summaries past a cap of
/// their own are left out. At 67 mentions a minute (the bench's load round,
/// docs/benchmarks.md) OpenClaw fell 100 s behind and never answered the 4
/// oldest ("followup queue omitted 4 route-isolated overflow summaries").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Queue {
    cap: u32,
}

/// Mentions a room's session may hold while OpenClaw answers one.
const QUEUE_CAP: u32 = 100;

/// OpenClaw's recurring heartbeat turn: every 30 minutes by default, it
/// DMs the first `allowFrom` entry (seen: "No direct room found for
/// @balthasar-pi:magi"). The appliance's agents speak when spoken to.
#[derive(Debug, Serialize)]
struct Heartbeat {
    /// `0m` disables the recurring cadence.
    every: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentModel {
    primary: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSandbox {
    mode: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Channels {
    matrix: Matrix,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Matrix {
    enabled: bool,
    homeserver: String,
    user_id: String,
    access_token: SecretRef,
    device_id: String,
    encryption: bool,
    dm: Dm,
    group_policy: &'static str,
    group_allow_from: Vec<String>,
    groups: BTreeMap<String, Group>,
    auto_join: &'static str,
    auto_join_allowlist: Vec<String>,
    network: MatrixNetwork,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec_approvals: Option<ExecApprovals>,
}

/// OpenClaw's Matrix exec approvals (`channels.matrix.execApprovals`,
/// docs/agents.md "Approvals, and what each guards"): when OpenClaw's own
/// exec policy asks before a command, who may answer. Unset, OpenClaw
/// falls back to `dm.allowFrom`, every human of the agent's rooms.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecApprovals {
    enabled: bool,
    /// The spec's admins only.
    approvers: Vec<String>,
    /// The prompt goes to each approver's DM: the agents' rooms are
    /// shared with other agents and humans, and the prompt shows the
    /// command.
    target: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Dm {
    policy: &'static str,
    allow_from: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    require_mention: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MatrixNetwork {
    dangerously_allow_private_network: bool,
}

/// Chromium's own calls home that OpenClaw's launch flags leave on, seen
/// through the rehearsal's egress proxy: optimization hints, network time,
/// Safe Browsing's client-side model, hyperlink pings, domain reliability
/// reports. `Translate,MediaRouter` repeat OpenClaw's own
/// `--disable-features`, which this one replaces (Chromium keeps the last).
/// No flag tried stops its calls to accounts.google.com and
/// update.googleapis.com (docs/agents.md).
const QUIET_CHROMIUM: &[&str] = &[
    "--disable-features=Translate,MediaRouter,OptimizationHints,OptimizationGuideModelDownloading,\
     OptimizationHintsFetching,NetworkTimeServiceQuerying,AutofillServerCommunication,\
     CertificateTransparencyComponentUpdater",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--disable-domain-reliability",
    "--disable-default-apps",
    "--disable-breakpad",
];

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Browser {
    enabled: bool,
    executable_path: &'static str,
    headless: bool,
    no_sandbox: bool,
    /// OpenClaw starts Chromium with `--no-proxy-server` and without the
    /// proxy variables unless these name a proxy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    extra_args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ssrf_policy: Option<SsrfPolicy>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SsrfPolicy {
    dangerously_allow_private_network: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Plugins {
    entries: BTreeMap<&'static str, Enabled>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Enabled {
    enabled: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Tools {
    elevated: Enabled,
    fs: Fs,
    web: Web,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec: Option<Exec>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Fs {
    workspace_only: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Web {
    search: Enabled,
    fetch: Enabled,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Exec {
    security: &'static str,
}

/// `published`: the spec publishes a port of this sandbox, so the gateway
/// must listen beyond loopback (its token auth stays on).
pub fn config(agent: &Agent, published: bool) -> Config {
    let browser = agent.tools.contains(&Tool::Browser);
    Config {
        gateway: Gateway {
            mode: "local",
            port: GATEWAY_PORT,
            bind: if published { "lan" } else { "loopback" },
            auth: GatewayAuth {
                mode: "token",
                // Generated by the bootstrap into the agent's env file.
                token: SecretRef {
                    source: "env",
                    provider: "default",
                    id: "OPENCLAW_GATEWAY_TOKEN",
                },
            },
        },
        secrets: Secrets {
            providers: BTreeMap::from([(
                MATRIX_TOKEN_PROVIDER,
                SecretProvider {
                    source: "file",
                    path: format!("{SECRETS_MOUNT}/{MATRIX_TOKEN_FILE}"),
                    mode: "singleValue",
                },
            )]),
        },
        models: models(agent),
        agents: Agents {
            defaults: AgentDefaults {
                workspace: WORKSPACE,
                model: agent.model.as_ref().map(|m| AgentModel {
                    primary: format!("ollama/{m}"),
                }),
                // gVisor is the boundary; OpenClaw's own Docker sandbox would
                // need the host's Docker socket.
                sandbox: ToolSandbox { mode: "off" },
                heartbeat: Heartbeat { every: "0m" },
            },
        },
        messages: Messages {
            queue: Queue { cap: QUEUE_CAP },
        },
        channels: Channels {
            matrix: matrix_channel(agent),
        },
        browser: browser.then(|| chromium(agent)),
        plugins: Plugins {
            entries: BTreeMap::from([
                ("browser", Enabled { enabled: browser }),
                ("matrix", Enabled { enabled: true }),
                ("ollama", Enabled { enabled: true }),
            ]),
        },
        tools: Tools {
            elevated: Enabled { enabled: false },
            fs: Fs { workspace_only: true },
            web: Web {
                // Every search provider is a public service.
                search: Enabled { enabled: false },
                fetch: Enabled {
                    enabled: agent.tools.contains(&Tool::WebFetch),
                },
            },
            exec: (!agent.tools.contains(&Tool::Exec)).then_some(Exec { security: "deny" }),
        },
    }
}

/// The model provider: the appliance's Ollama, when the agent has a model.
fn models(agent: &Agent) -> Option<Models> {
    let (url, model) = agent.inference_url.as_ref().zip(agent.model.as_ref())?;
    Some(Models {
        mode: "replace",
        providers: BTreeMap::from([(
            "ollama",
            ModelProvider {
                // Ollama's native API: `/v1` breaks OpenClaw's tool calls.
                base_url: url.trim_end_matches('/').to_string(),
                api_key: "ollama-local",
                api: "ollama",
                // Large local models are slow to first token.
                timeout_seconds: 300,
                models: vec![Model {
                    id: model.clone(),
                    name: model.clone(),
                    context_window: agent.context,
                }],
            },
        )]),
        catalog_refresh: Enabled { enabled: false },
    })
}

/// The Matrix channel: the appliance's homeserver, its admins and the
/// agent's rooms only.
fn matrix_channel(agent: &Agent) -> Matrix {
    Matrix {
        enabled: true,
        homeserver: agent.homeserver_url.clone(),
        user_id: agent.user_id.clone(),
        access_token: SecretRef {
            source: "file",
            provider: MATRIX_TOKEN_PROVIDER,
            id: "value",
        },
        device_id: agent.device_id.clone(),
        // Private homeserver, unencrypted rooms.
        encryption: false,
        // Appliance admins and the agents it shares a room with;
        // never a wildcard.
        dm: Dm {
            policy: "allowlist",
            allow_from: agent.allowed_users.clone(),
        },
        group_policy: "allowlist",
        group_allow_from: agent.allowed_users.clone(),
        groups: agent
            .rooms
            .iter()
            .map(|alias| (alias.clone(), Group { require_mention: true }))
            .collect(),
        auto_join: "allowlist",
        auto_join_allowlist: agent.rooms.clone(),
        // The one loosened setting (Agent::permissive says why): the
        // homeserver is on the appliance's private network.
        network: MatrixNetwork {
            dangerously_allow_private_network: true,
        },
        // Only where exec is not denied outright: the spec's admins answer
        // whatever OpenClaw asks before a command. With no admins it is
        // off: OpenClaw reads an empty `approvers` as unset and would take
        // `dm.allowFrom`, every human of the agent's rooms.
        exec_approvals: agent.tools.contains(&Tool::Exec).then(|| ExecApprovals {
            enabled: !agent.admins.is_empty(),
            approvers: agent.admins.clone(),
            target: "dm",
        }),
    }
}

/// The `browser` tool's Chromium, through the egress proxy.
fn chromium(agent: &Agent) -> Browser {
    Browser {
        enabled: true,
        executable_path: CHROMIUM_PATH,
        headless: true,
        // Chromium's own sandbox cannot start inside gVisor; the gVisor
        // sandbox is the boundary.
        no_sandbox: true,
        extra_args: agent
            .egress_proxy
            .iter()
            .map(|url| format!("--proxy-server={url}"))
            .chain(QUIET_CHROMIUM.iter().map(|flag| flag.to_string()))
            .collect(),
        // OpenClaw refuses proxy-routed navigation while its own SSRF
        // check is on (it cannot see what the proxy resolves); the egress
        // proxy refuses private and metadata addresses instead
        // (Agent::permissive says so).
        ssrf_policy: agent.egress_proxy.is_some().then_some(SsrfPolicy {
            dangerously_allow_private_network: true,
        }),
    }
}
