//! Hermes Agent: Python, with a browser (agent-browser driving Chromium),
//! web search and page extraction through the appliance's SearXNG and
//! webextract, and code execution in a Docker-in-gVisor sandbox. Its config
//! is YAML (`config.rs`); Hermes 0.19.0's own loader
//! (tests/tools/validate_hermes.py) checks every generated file.

mod config;

use std::net::Ipv4Addr;

use anyhow::Result;

use super::{
    CHROMIUM_SANDBOX_REASON, CiInstall, Kind, Notes, PlanEnv, Proof, SandboxNeeds, Supports, ToolLogFormat, ToolPolicy,
    Validator, openai_base,
};
use crate::generator::model::Size;
use crate::generator::model::image::{Account, CA_BUNDLE, ImageLayout, TMP, VersionCheck, state_volume};
use crate::generator::model::policy::Request;
use crate::generator::model::{Agent, CHROMIUM_PATH, Permissive, Warning, egress};
use crate::generator::spec::schema::{AgentKind, Tool};

/// The release our image packages (the newest on PyPI) and
/// tests/tools/validate_hermes.py loads.
pub const VERSION: &str = crate::generator::pins::HERMES;

pub struct Hermes;

static SUPPORTS: Supports = Supports {
    tools: &[Tool::Browser, Tool::Crawler, Tool::Code, Tool::WebFetch, Tool::Exec],
    default_context: 65_536,
    // Hermes refuses models with a smaller context window.
    min_context: Some(64_000),
    skills: None,
    remote_exec: false,
    gateway: None,
};

static SANDBOX: SandboxNeeds = SandboxNeeds {
    config_file: "config.yaml",
    config_target: "/opt/data/config.yaml",
    memory: Size::gib(4),
    cpus: 2.0,
    pids: 4096,
    environment: &[
        ("HERMES_HOME", "/opt/data"),
        ("HERMES_DISABLE_LAZY_INSTALLS", "1"),
        // Token-scoped gateway locks on the tmpfs, not the state volume: a
        // lock left by a killed container names a PID that the next
        // container's fresh PID namespace may reuse.
        ("HERMES_GATEWAY_LOCK_DIR", "/tmp/hermes-gateway-locks"),
    ],
    // Hermes 0.19.0's Matrix client takes HTTPS_PROXY without looking at
    // NO_PROXY (`resolve_proxy_url` is called without target hosts), so
    // with these variables it sent Matrix through the egress proxy, which
    // refuses the private address: casper never connected (seen in the
    // rehearsal). Its browser gets the proxy through AGENT_BROWSER_ARGS;
    // its other web tools are off, and the firewall rejects direct egress.
    proxy_env: None,
};

pub(crate) const IMAGE: ImageLayout = ImageLayout {
    name: "hermes",
    repository: "agent-appliance/hermes",
    tag: VERSION,
    purpose: "Hermes Agent from PyPI with Chromium and agent-browser for its browser, the firecrawl client for its crawler and the Docker CLI for code execution",
    // Upstream's Docker image: user `hermes` 10000, HERMES_HOME /opt/data.
    account: Account {
        name: "hermes",
        uid: 10000,
        gid: 10000,
        home: "/opt/data",
    },
    writable: &[state_volume("/opt/data"), TMP],
    // `hermes gateway run` after clearing stale single-instance records
    // from the state volume (nix/packages/hermes-start.sh says why).
    entrypoint: &["tini", "-s", "--", "appliance-hermes-start"],
    env: &[CA_BUNDLE, "AGENT_BROWSER_EXECUTABLE_PATH=/bin/chromium"],
    packages: &[
        "appliance-hermes",
        "appliance-hermes-start",
        "chromium",
        "docker-client",
        "cacert",
        "tini",
    ],
    browser_packages: &["chromium"],
    bundled_plugins: &[],
    version_check: VersionCheck::Exact {
        package: "appliance-hermes",
    },
};

static PLAN: PlanEnv = PlanEnv {
    token_env: &["MATRIX_ACCESS_TOKEN"],
    // Hermes compares room IDs only (no alias resolution), and
    // MATRIX_ALLOWED_ROOMS in the environment wins over config.yaml.
    room_ids_env: &["MATRIX_ALLOWED_ROOMS"],
    // Without it Hermes prefixes the first answer of every new thread with
    // "📬 No home channel is set for Matrix" and a /sethome hint.
    home_room_env: &["MATRIX_HOME_ROOM"],
    generated_env: &[],
    // The reply, a 👀 reaction when it starts, a ✅ when it is done and the
    // redaction of the 👀 (its `MATRIX_REACTIONS`, on by default; seen in
    // Synapse's log under the bench's load, docs/benchmarks.md).
    events_per_reply: 4,
    // HERMES_HOME (the state volume): its session store, one row per
    // message, the assistant's tool calls as OpenAI-style JSON.
    tool_log: (ToolLogFormat::HermesMessages, "state", "state.db"),
};

static PROOF: Proof = Proof {
    validator: Validator::File {
        path: "tests/tools/validate_hermes.py",
    },
    accepts_test: "hermes_accepts_every_generated_config",
    rejects_test: "hermes_check_rejects_unknown_keys_and_bad_values",
    sources_key: "hermes-agent",
    package: "hermes",
    ci: CiInstall::Pinned { var: "HERMES_VERSION" },
};

impl Kind for Hermes {
    kind_facts!(AgentKind::Hermes, "hermes", "Hermes");

    /// Hermes 0.19.0 takes the Matrix connection only from the environment;
    /// config.yaml's `matrix:` holds the policies.
    fn environment(&self, agent: &Agent, gateway: Ipv4Addr) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("MATRIX_HOMESERVER", agent.homeserver_url.clone()),
            ("MATRIX_USER_ID", agent.user_id.clone()),
            ("MATRIX_DEVICE_ID", agent.device_id.clone()),
            ("MATRIX_ALLOWED_USERS", agent.allowed_users.join(",")),
            // Rooms are private and unencrypted; python-olm is deprecated.
            ("MATRIX_E2EE_MODE", "off".into()),
        ];
        // The `crawler` tool's SearXNG; Hermes reads it from the environment.
        if let Some(url) = &agent.search_url {
            env.push(("SEARXNG_URL", url.clone()));
        }
        // The `crawler` tool's webextract, through Hermes' `tavily`
        // provider (its key, TAVILY_API_KEY, is in the host's key file).
        if let Some(url) = &agent.extract_url {
            env.push(("TAVILY_BASE_URL", url.clone()));
        }
        if agent.tools.contains(&Tool::Browser) {
            env.push(("AGENT_BROWSER_EXECUTABLE_PATH", CHROMIUM_PATH.into()));
            // Chromium's own sandbox cannot start inside gVisor, which is the
            // boundary; said here rather than left to Hermes' detection.
            // Comma-separated, as agent-browser splits it. Chromium ignores
            // the proxy variables; with egress it is told the proxy.
            let mut args = "--no-sandbox".to_string();
            if agent.egress.uses_proxy() {
                args.push_str(&format!(",--proxy-server={}", egress::proxy_url(gateway)));
            }
            env.push(("AGENT_BROWSER_ARGS", args));
        }
        env
    }

    fn tool(&self, request: &Request, tool: Tool) -> ToolPolicy {
        let name = request.name;
        match tool {
            // SearXNG gives web_search; the appliance's webextract, which
            // speaks the part of Tavily's API Hermes' `tavily` provider
            // calls, gives web_extract (Hermes' self-hosted Firecrawl would
            // be five services: API, Playwright, Redis, RabbitMQ,
            // PostgreSQL, none in nixpkgs).
            Tool::Crawler if request.search_backend => ToolPolicy {
                keep: true,
                warning: (!request.extract_backend).then(|| Warning {
                    code: "agent-extract-off",
                    message: format!(
                        "agent `{name}`: Hermes' `crawler` tool searches through the appliance's SearXNG \
                         (web_search); web_extract is off because the spec sets `[crawler] extract = \"off\"`; \
                         the browser tool still reads web pages"
                    ),
                }),
            },
            // Hermes 0.19.0's `web` toolset (web_search, web_extract) only
            // has third-party backends (Firecrawl, Tavily, Exa, Parallel,
            // Brave, xAI, DuckDuckGo through `ddgs`, or a self-hosted
            // Firecrawl/SearXNG); the appliance runs none of them, and the
            // keyless ones are public services.
            Tool::Crawler | Tool::WebFetch => ToolPolicy {
                keep: false,
                warning: Some(Warning {
                    code: "agent-web-off",
                    message: format!(
                        "agent `{name}`: Hermes' `{}` tool is off: its backends are public services \
                         (Firecrawl, Tavily, Exa, DuckDuckGo, ...) or a self-hosted Firecrawl/SearXNG \
                         this appliance does not run; the browser tool still reads web pages",
                        if tool == Tool::Crawler { "crawler" } else { "web-fetch" }
                    ),
                }),
            },
            _ => ToolPolicy {
                keep: true,
                warning: None,
            },
        }
    }

    fn policy(&self, _request: &Request, tools: &[Tool]) -> Notes {
        let mut permissive = Vec::new();
        if tools.contains(&Tool::Browser) {
            permissive.push(Permissive {
                setting: "AGENT_BROWSER_ARGS=--no-sandbox".into(),
                reason: CHROMIUM_SANDBOX_REASON.into(),
            });
        }
        permissive.push(Permissive {
            setting: "security.tirith_enabled = false".into(),
            reason: "Hermes' tirith command scanner downloads itself from GitHub at runtime, which the \
                     appliance does not allow; commands run in gVisor sandboxes (the code sandbox, or the \
                     agent's own with no capabilities), and Hermes' approval rules stay on"
                .into(),
        });
        Notes {
            permissive,
            warnings: Vec::new(),
        }
    }

    fn config(&self, agent: &Agent, _published: bool) -> Result<Vec<u8>> {
        crate::generator::formats::yaml(&config::config(agent))
    }
}
