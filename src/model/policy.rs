//! What each agent kind may do on this appliance, beyond what the spec
//! says: tools that stay off because they could only reach a public service,
//! and the few loosened settings an agent's own config needs. The renderers
//! in `render::agents` follow these decisions; `appliance inspect` and
//! `appliance check` show them.

use super::{Permissive, Warning};
use crate::spec::schema::{AgentKind, Tool};

/// The agent's effective tools and the notes that explain the difference
/// from the spec.
pub struct Policy {
    pub tools: Vec<Tool>,
    pub permissive: Vec<Permissive>,
    pub warnings: Vec<Warning>,
}

pub fn apply(name: &str, kind: AgentKind, tools: Vec<Tool>, skills: &[String], remote_exec: bool) -> Policy {
    let mut permissive = Vec::new();
    let mut warnings = Vec::new();
    let mut effective = Vec::new();
    for tool in tools {
        match (kind, tool) {
            // Hermes 0.19.0's `web` toolset (web_search, web_extract) only
            // has third-party backends (Firecrawl, Tavily, Exa, Parallel,
            // Brave, xAI, DuckDuckGo through `ddgs`, or a self-hosted
            // Firecrawl/SearXNG); the appliance runs none of them, and the
            // keyless ones are public services.
            (AgentKind::Hermes, Tool::Crawler | Tool::WebFetch) => warnings.push(Warning {
                code: "agent-web-off",
                message: format!(
                    "agent `{name}`: Hermes' `{}` tool is off: its backends are public services \
                     (Firecrawl, Tavily, Exa, DuckDuckGo, ...) or a self-hosted Firecrawl/SearXNG \
                     this appliance does not run; the browser tool still reads web pages",
                    if tool == Tool::Crawler { "crawler" } else { "web-fetch" }
                ),
            }),
            _ => effective.push(tool),
        }
    }
    if kind == AgentKind::Picoclaw && skills.iter().any(|s| s == "github") {
        if !(effective.contains(&Tool::Exec) && remote_exec) {
            warnings.push(Warning {
                code: "agent-skill-needs-exec",
                message: format!(
                    "agent `{name}`: the `github` skill runs the `gh` CLI through PicoClaw's exec tool, \
                     which refuses commands from chat unless the agent has `tools = [\"exec\"]` and \
                     `remote-exec = true`; as written the skill can only describe what to run"
                ),
            });
        }
        warnings.push(Warning {
            code: "agent-skill-needs-token",
            message: format!(
                "agent `{name}`: the `github` skill needs a GitHub token as `GH_TOKEN` in the agent's \
                 env file; the bootstrap cannot create one, add it by hand"
            ),
        });
    }
    if kind == AgentKind::Picoclaw && remote_exec {
        permissive.push(Permissive {
            setting: "tools.exec.allow_remote = true".into(),
            reason: "the spec sets `remote-exec = true`: allowlisted Matrix users (appliance admins and \
                     agents sharing a room) can make the agent run shell commands. They run inside the \
                     agent's gVisor sandbox (read-only root, no capabilities, no host access), with \
                     PicoClaw's deny patterns and workspace restriction still on"
                .into(),
        });
    }
    if kind == AgentKind::Openclaw {
        permissive.push(Permissive {
            setting: "channels.matrix.network.dangerouslyAllowPrivateNetwork = true".into(),
            reason: "OpenClaw's Matrix client refuses homeservers on private addresses (SSRF guard); \
                     the appliance's Synapse is only reachable on its private network, never on a \
                     public address. It applies to the Matrix account alone: the browser and \
                     web_fetch keep OpenClaw's default private-network block"
                .into(),
        });
    }
    Policy {
        tools: effective,
        permissive,
        warnings,
    }
}

/// Env var names the bootstrap writes an agent's Matrix token under in its
/// env file, besides the [`MATRIX_TOKEN_FILE`](super::MATRIX_TOKEN_FILE).
pub fn token_env(kind: AgentKind) -> &'static [&'static str] {
    match kind {
        // Hermes reads MATRIX_ACCESS_TOKEN. OpenClaw reads the token file
        // through a SecretRef; MATRIX_ACCESS_TOKEN is only its documented
        // fallback, kept for the env file's contract.
        AgentKind::Openclaw | AgentKind::Hermes => &["MATRIX_ACCESS_TOKEN"],
        // PicoClaw's `file://` references must lie inside its config
        // directory, which holds read-only generated files; its env
        // override of the config field is the one way in.
        AgentKind::Picoclaw => &["PICOCLAW_CHANNELS_MATRIX_ACCESS_TOKEN"],
    }
}

/// Env var names the bootstrap writes the comma-separated IDs of an agent's
/// rooms under, once it has created them.
pub fn room_ids_env(kind: AgentKind) -> &'static [&'static str] {
    match kind {
        // Hermes compares room IDs only (no alias resolution), and
        // MATRIX_ALLOWED_ROOMS in the environment wins over config.yaml.
        AgentKind::Hermes => &["MATRIX_ALLOWED_ROOMS"],
        // OpenClaw resolves room aliases itself; PicoClaw never auto-joins.
        AgentKind::Openclaw | AgentKind::Picoclaw => &[],
    }
}

/// Env vars only the operator can provide (third-party credentials), which
/// must be added by hand to the agent's env file; the bootstrap keeps them.
pub fn operator_env(kind: AgentKind, skills: &[String]) -> Vec<&'static str> {
    match kind {
        // `gh` reads GH_TOKEN.
        AgentKind::Picoclaw if skills.iter().any(|s| s == "github") => vec!["GH_TOKEN"],
        _ => Vec::new(),
    }
}
