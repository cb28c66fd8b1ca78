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

/// What the spec asks of one agent, as far as the policy needs it.
pub struct Request<'a> {
    pub name: &'a str,
    pub kind: AgentKind,
    pub tools: Vec<Tool>,
    pub skills: &'a [String],
    pub remote_exec: bool,
    pub code_network: bool,
    pub publish: &'a [u16],
    /// The appliance runs a search backend for the `crawler` tool.
    pub search_backend: bool,
    /// ... and an extraction backend beside it.
    pub extract_backend: bool,
    /// The agent's egress goes through the proxy (`egress` is not `none`).
    pub egress_proxy: bool,
}

pub fn apply(request: Request) -> Policy {
    let Request {
        name,
        kind,
        tools,
        skills,
        remote_exec,
        code_network,
        publish,
        search_backend,
        extract_backend,
        egress_proxy,
    } = request;
    let mut permissive = Vec::new();
    let mut warnings = Vec::new();
    let mut effective = Vec::new();
    for tool in tools {
        match (kind, tool) {
            // SearXNG gives web_search; the appliance's webextract, which
            // speaks the part of Tavily's API Hermes' `tavily` provider
            // calls, gives web_extract (Hermes' self-hosted Firecrawl would
            // be five services: API, Playwright, Redis, RabbitMQ,
            // PostgreSQL, none in nixpkgs).
            (AgentKind::Hermes, Tool::Crawler) if search_backend => {
                effective.push(tool);
                if !extract_backend {
                    warnings.push(Warning {
                        code: "agent-extract-off",
                        message: format!(
                            "agent `{name}`: Hermes' `crawler` tool searches through the appliance's SearXNG \
                             (web_search); web_extract is off because the spec sets `[crawler] extract = \"off\"`; \
                             the browser tool still reads web pages"
                        ),
                    });
                }
            }
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
            setting: "tools.exec.allow_remote = true, cron.allow_command = true".into(),
            reason: "the spec sets `remote-exec = true`: allowlisted Matrix users (appliance admins and \
                     the agents sharing a room, so a prompt-injected agent too) can make the agent run \
                     shell commands, now or on a schedule. They run inside the agent's gVisor sandbox \
                     (read-only root, no capabilities, no host access) with PicoClaw's deny patterns \
                     and workspace restriction on, but they see what the agent sees: its environment \
                     and /run/secrets/appliance, i.e. its Matrix token and GH_TOKEN"
                .into(),
        });
    }
    if kind == AgentKind::Picoclaw {
        permissive.push(Permissive {
            setting: "isolation.enabled = false".into(),
            reason: "PicoClaw's own subprocess isolation needs bubblewrap namespaces inside the sandbox; \
                     the gVisor sandbox is the boundary instead"
                .into(),
        });
    }
    let browser = effective.contains(&Tool::Browser);
    if browser && kind == AgentKind::Openclaw {
        permissive.push(Permissive {
            setting: "browser.noSandbox = true".into(),
            reason: "Chromium's own namespace sandbox cannot start inside gVisor without privileges we \
                     do not grant; the gVisor sandbox (no capabilities, read-only root) is the boundary"
                .into(),
        });
    }
    if browser && kind == AgentKind::Hermes {
        permissive.push(Permissive {
            setting: "AGENT_BROWSER_ARGS=--no-sandbox".into(),
            reason: "Chromium's own namespace sandbox cannot start inside gVisor without privileges we \
                     do not grant; the gVisor sandbox (no capabilities, read-only root) is the boundary"
                .into(),
        });
    }
    if kind == AgentKind::Openclaw {
        permissive.push(Permissive {
            setting: "agents.defaults.sandbox.mode = \"off\"".into(),
            reason: "OpenClaw's own tool sandbox needs the host's Docker socket, which no agent gets; \
                     the agent's whole gateway runs in gVisor instead"
                .into(),
        });
    }
    if kind == AgentKind::Hermes {
        permissive.push(Permissive {
            setting: "security.tirith_enabled = false".into(),
            reason: "Hermes' tirith command scanner downloads itself from GitHub at runtime, which the \
                     appliance does not allow; commands run in gVisor sandboxes (the code sandbox, or the \
                     agent's own with no capabilities), and Hermes' approval rules stay on"
                .into(),
        });
    }
    if code_network {
        permissive.push(Permissive {
            setting: "code-network = true".into(),
            reason: "executed code can reach the network: its Docker-in-gVisor sandbox (raw sockets, \
                     NET_ADMIN inside gVisor) joins the appliance bridge. The host firewall lets it reach \
                     only the bridge's DNS resolver and, with the agent's `egress`, the egress proxy: not \
                     Synapse, Ollama or the other sandboxes"
                .into(),
        });
    }
    if browser && kind == AgentKind::Openclaw && egress_proxy {
        permissive.push(Permissive {
            setting: "browser.ssrfPolicy.dangerouslyAllowPrivateNetwork = true".into(),
            reason: "OpenClaw refuses to route its browser through a proxy while its own SSRF check is on, \
                     since it cannot see what the proxy resolves. The egress proxy outside the sandbox \
                     refuses private, loopback, link-local, CGNAT, multicast and metadata addresses by \
                     resolved address instead, and the host firewall drops any direct connection"
                .into(),
        });
    }
    for port in publish {
        permissive.push(Permissive {
            setting: format!("publish = {port}"),
            reason: format!(
                "the agent's gateway is published on port {port} of every host interface (Docker's \
                 port forwarding bypasses the host firewall); it keeps token auth, but over plain HTTP"
            ),
        });
    }
    if kind == AgentKind::Openclaw {
        permissive.push(Permissive {
            setting: "channels.matrix.network.dangerouslyAllowPrivateNetwork = true".into(),
            reason: "OpenClaw's Matrix client refuses homeservers on private addresses (SSRF guard); \
                     the appliance's Synapse is only reachable on its private network, never on a \
                     public address. It applies to the Matrix account alone; web_fetch keeps \
                     OpenClaw's default private-network block, and the host firewall lets the sandbox \
                     reach no private address but Synapse's and Ollama's ports"
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

/// Env var names the bootstrap writes the ID of an agent's first room under:
/// its home room, where it delivers what no one asked for in a thread.
pub fn home_room_env(kind: AgentKind) -> &'static [&'static str] {
    match kind {
        // Without it Hermes prefixes the first answer of every new thread
        // with "📬 No home channel is set for Matrix" and a /sethome hint.
        AgentKind::Hermes => &["MATRIX_HOME_ROOM"],
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

/// The Synapse message rate limit the bootstrap sets for an agent's
/// account (`override_ratelimit`): above Synapse's default for humans
/// (0.2/s, burst 10), which a single agent reply with its reactions,
/// edits and chunks can exhaust, and never unlimited (0), so a runaway
/// agent is still throttled. Loops between agents are bounded by who an
/// agent answers (humans only, see `model::build`), not by this limit.
pub fn rate_limit(kind: AgentKind) -> (u32, u32) {
    match kind {
        // (messages per second, burst)
        AgentKind::Openclaw | AgentKind::Hermes | AgentKind::Picoclaw => (2, 30),
    }
}
