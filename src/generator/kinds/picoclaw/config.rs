//! PicoClaw `config.json` (schema version 3). PicoClaw rejects unknown keys
//! at every struct level except inside a channel's `settings`, which it
//! decodes leniently; tests/agents.rs checks every generated file against
//! the v0.2.9 key tree written down there, `settings` included.
//!
//! PicoClaw's code defaults are loose where the appliance must be strict
//! (`tools.exec.allow_remote` is true in code, web search is on with a
//! public engine, skill registries point at public hubs), so every such
//! setting is written out explicitly rather than left to a default.

use serde::Serialize;

use super::openai_base;
use crate::generator::model::Agent;
use crate::generator::spec::schema::Tool;

/// PicoClaw's health/webhook gateway port.
pub const GATEWAY_PORT: u16 = 18790;
/// Inside the agent's state volume (`PICOCLAW_HOME`).
const WORKSPACE: &str = "/var/lib/picoclaw/workspace";

#[derive(Debug, Serialize)]
pub struct Config {
    version: u32,
    agents: Agents,
    model_list: Vec<ModelEntry>,
    channel_list: ChannelList,
    tools: Tools,
    gateway: Gateway,
    isolation: Enabled,
}

#[derive(Debug, Serialize)]
struct Agents {
    defaults: AgentDefaults,
}

#[derive(Debug, Serialize)]
struct AgentDefaults {
    workspace: &'static str,
    restrict_to_workspace: bool,
    allow_read_outside_workspace: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_name: Option<String>,
    context_window: u32,
}

#[derive(Debug, Serialize)]
struct ModelEntry {
    model_name: String,
    provider: &'static str,
    model: String,
    api_base: String,
    /// Seconds; large local models are slow to first token.
    request_timeout: u32,
}

#[derive(Debug, Serialize)]
struct ChannelList {
    matrix: Channel,
}

#[derive(Debug, Serialize)]
struct Channel {
    enabled: bool,
    #[serde(rename = "type")]
    kind: &'static str,
    allow_from: Vec<String>,
    group_trigger: GroupTrigger,
    settings: MatrixSettings,
}

#[derive(Debug, Serialize)]
struct GroupTrigger {
    mention_only: bool,
}

/// The token is not here: it comes from PICOCLAW_CHANNELS_MATRIX_ACCESS_TOKEN
/// in the env file the bootstrap writes.
#[derive(Debug, Serialize)]
struct MatrixSettings {
    homeserver: String,
    user_id: String,
    device_id: String,
    /// The bootstrap joins the agent to its rooms; invites are ignored.
    join_on_invite: bool,
}

#[derive(Debug, Serialize)]
struct Tools {
    web: WebTools,
    web_fetch: Enabled,
    exec: Exec,
    cron: Cron,
    skills: Skills,
    find_skills: Enabled,
    install_skill: Enabled,
    mcp: Enabled,
}

#[derive(Debug, Serialize)]
struct WebTools {
    enabled: bool,
    sogou: Enabled,
    duckduckgo: Enabled,
}

#[derive(Debug, Serialize)]
struct Exec {
    enabled: bool,
    enable_deny_patterns: bool,
    allow_remote: bool,
}

#[derive(Debug, Serialize)]
struct Cron {
    enabled: bool,
    allow_command: bool,
}

#[derive(Debug, Serialize)]
struct Skills {
    enabled: bool,
    registries: Registries,
}

#[derive(Debug, Serialize)]
struct Registries {
    github: Enabled,
    clawhub: Enabled,
}

#[derive(Debug, Serialize)]
struct Gateway {
    host: &'static str,
    port: u16,
}

#[derive(Debug, Serialize)]
struct Enabled {
    enabled: bool,
}

const OFF: Enabled = Enabled { enabled: false };

/// `allow_from` entries for Matrix user IDs, in PicoClaw's canonical
/// `platform:id` form. PicoClaw (v0.2.9, `identity.MatchAllowed`) reads any
/// entry with a colon as `platform:id`, so a bare `@gendo:magi` is platform
/// `@gendo`, matches no sender, and, the list being non-empty, the channel
/// ignores everyone (sipeed/picoclaw#2815). `matrix:@gendo:magi` is compared
/// with the sender's canonical ID `matrix:<sender>`, which is that user.
fn allow_from(user_ids: &[String]) -> Vec<String> {
    user_ids.iter().map(|id| format!("matrix:{id}")).collect()
}

/// `published`: the spec publishes a port of this sandbox, so the gateway
/// must listen beyond loopback.
pub fn config(agent: &Agent, published: bool) -> Config {
    let exec = agent.tools.contains(&Tool::Exec);
    let remote_exec = exec && agent.remote_exec;
    let model_list = agent
        .inference_url
        .as_ref()
        .zip(agent.model.as_ref())
        .map(|(url, model)| ModelEntry {
            model_name: model.clone(),
            // OpenAI-compatible protocol at Ollama's `/v1`.
            provider: "ollama",
            model: model.clone(),
            api_base: openai_base(url),
            request_timeout: 300,
        })
        .into_iter()
        .collect();
    Config {
        version: 3,
        agents: Agents {
            defaults: AgentDefaults {
                workspace: WORKSPACE,
                restrict_to_workspace: true,
                allow_read_outside_workspace: false,
                model_name: agent.model.clone(),
                context_window: agent.context,
            },
        },
        model_list,
        channel_list: ChannelList {
            matrix: Channel {
                enabled: true,
                kind: "matrix",
                allow_from: allow_from(&agent.allowed_users),
                group_trigger: GroupTrigger { mention_only: true },
                settings: MatrixSettings {
                    homeserver: agent.homeserver_url.clone(),
                    user_id: agent.user_id.clone(),
                    device_id: agent.device_id.clone(),
                    join_on_invite: false,
                },
            },
        },
        tools: Tools {
            // Web search engines are public services (sogou is on by
            // default); no spec setting turns them on.
            web: WebTools {
                enabled: false,
                sogou: OFF,
                duckduckgo: OFF,
            },
            web_fetch: Enabled {
                enabled: agent.tools.contains(&Tool::WebFetch),
            },
            exec: Exec {
                enabled: exec,
                enable_deny_patterns: true,
                // Commands from chat only when the spec says `remote-exec`.
                allow_remote: remote_exec,
            },
            // Scheduled shell commands are exec by another door.
            cron: Cron {
                enabled: true,
                allow_command: remote_exec,
            },
            // Skills ship in the image; installing more would fetch from
            // public hubs (GitHub, ClawHub).
            skills: Skills {
                enabled: false,
                registries: Registries {
                    github: OFF,
                    clawhub: OFF,
                },
            },
            find_skills: OFF,
            install_skill: OFF,
            mcp: OFF,
        },
        gateway: Gateway {
            host: if published { "0.0.0.0" } else { "127.0.0.1" },
            port: GATEWAY_PORT,
        },
        // PicoClaw's own subprocess isolation nests namespaces inside gVisor;
        // the gVisor sandbox is the boundary.
        isolation: OFF,
    }
}
