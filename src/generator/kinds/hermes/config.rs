//! Hermes Agent `config.yaml` (YAML, from these serde structs). Hermes
//! ignores keys it does not know, so tests/tools/validate_hermes.py drives
//! Hermes 0.19.0's own loader and key checker over every generated file.
//!
//! The Matrix connection (homeserver, user, device, E2EE mode, allowed
//! users) comes from the sandbox environment (`model::sandbox`), the token
//! and the room IDs from the env file the bootstrap writes; this file holds
//! the model, the tools and the policies.
//!
//! Hermes 0.19.0 reaches public services on its own in several places;
//! each is closed here and named where it is closed:
//! - web_search/web_extract auto-select a keyless public backend (DuckDuckGo
//!   through `ddgs`) or Nous' managed gateway: the `web` toolset is off
//!   (`agent.disabled_toolsets` also strips web_search from `browser`);
//!   with the `crawler` tool, web_search goes to the appliance's SearXNG,
//!   pinned by `web.search_backend`, and web_extract (the `web` toolset
//!   then, else only `search`) to its webextract through Hermes' `tavily`
//!   provider at `TAVILY_BASE_URL`, pinned by `web.extract_backend`;
//! - the browser auto-detects cloud browsers (Browser Use, Browserbase):
//!   `browser.cloud_provider = "local"` pins the local Chromium;
//! - text to speech defaults to Microsoft Edge's online voices: `tts` off;
//! - the tirith command scanner downloads itself from GitHub releases:
//!   off (gVisor is the boundary);
//! - missing Python packages are installed lazily from PyPI: off.

use std::collections::BTreeMap;

use serde::Serialize;

use super::openai_base;
use crate::generator::model::Agent;
use crate::generator::spec::schema::Tool;

#[derive(Debug, Serialize)]
pub struct Config {
    model: Model,
    platform_toolsets: BTreeMap<&'static str, Vec<&'static str>>,
    agent: AgentSettings,
    terminal: Terminal,
    browser: Browser,
    security: Security,
    auxiliary: BTreeMap<&'static str, Auxiliary>,
    matrix: Matrix,
    #[serde(skip_serializing_if = "Option::is_none")]
    web: Option<Web>,
    /// Strangers' DMs get nothing, not a pairing code to request access.
    unauthorized_dm_behavior: &'static str,
}

#[derive(Debug, Serialize)]
struct Model {
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    provider: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_url: Option<String>,
    /// Ollama ignores the key; Hermes wants one to call a custom endpoint.
    api_key: &'static str,
    context_length: u32,
}

#[derive(Debug, Serialize)]
struct AgentSettings {
    /// Subtracted from every toolset, composites included.
    disabled_toolsets: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
struct Terminal {
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_image: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_network: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_forward_env: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_mount_cwd_to_workspace: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_persistent: Option<bool>,
    /// MB; 0: no per-container disk quota.
    #[serde(skip_serializing_if = "Option::is_none")]
    container_disk: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_extra_args: Option<Vec<&'static str>>,
}

#[derive(Debug, Serialize)]
struct Browser {
    cloud_provider: &'static str,
    allow_private_urls: bool,
}

#[derive(Debug, Serialize)]
struct Security {
    allow_private_urls: bool,
    redact_secrets: bool,
    tirith_enabled: bool,
    allow_lazy_installs: bool,
}

#[derive(Debug, Serialize)]
struct Auxiliary {
    provider: &'static str,
}

/// The `crawler` tool's backends: the appliance's SearXNG (its URL is
/// `SEARXNG_URL` in the sandbox environment) and its webextract, which
/// speaks the part of Tavily's API Hermes' `tavily` provider calls
/// (`TAVILY_BASE_URL`; its key `TAVILY_API_KEY` from the host's key file).
/// Pinned, so Hermes never auto-selects another provider.
#[derive(Debug, Serialize)]
struct Web {
    search_backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    extract_backend: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct Matrix {
    require_mention: bool,
    allowed_users: Vec<String>,
}

/// Toolsets Hermes could offer that stay off whatever the spec says.
const ALWAYS_OFF: &[&str] = &[
    "web",
    "search",
    "tts",
    "image_gen",
    "video_gen",
    "x_search",
    "homeassistant",
    "spotify",
    "computer_use",
];

pub fn config(agent: &Agent) -> Config {
    let code = agent.code_execution.is_some();
    let toolsets = toolsets(agent);
    let search = agent.search_url.is_some();
    let extract = search && agent.extract_url.is_some();
    // Disabling `web` would strip web_search from every toolset, `search`
    // included; with SearXNG only the toolsets nothing enables stay listed.
    let disabled: Vec<&'static str> = ALWAYS_OFF
        .iter()
        .copied()
        .filter(|t| !search || !["web", "search"].contains(t))
        .collect();
    Config {
        model: Model {
            default: agent.model.clone(),
            provider: "custom",
            // OpenAI-compatible protocol at Ollama's `/v1`.
            base_url: agent.inference_url.as_deref().map(openai_base),
            api_key: "ollama",
            context_length: agent.context,
        },
        // The Matrix gateway's tools, explicitly: no composite that pulls in
        // everything.
        platform_toolsets: BTreeMap::from([("matrix", toolsets)]),
        agent: AgentSettings {
            disabled_toolsets: disabled,
        },
        terminal: terminal(code.then_some(agent.code_network)),
        browser: Browser {
            cloud_provider: "local",
            allow_private_urls: false,
        },
        security: Security {
            allow_private_urls: false,
            redact_secrets: true,
            tirith_enabled: false,
            allow_lazy_installs: false,
        },
        // Side tasks on the agent's own model, never a fallback provider.
        auxiliary: ["approval", "compression", "title_generation", "vision", "web_extract"]
            .into_iter()
            .map(|task| (task, Auxiliary { provider: "main" }))
            .collect(),
        matrix: Matrix {
            require_mention: true,
            allowed_users: agent.allowed_users.clone(),
        },
        web: search.then_some(Web {
            search_backend: "searxng",
            extract_backend: extract.then_some("tavily"),
        }),
        unauthorized_dm_behavior: "ignore",
    }
}

/// The Matrix gateway's toolsets, sorted: the agent's tools, explicitly.
fn toolsets(agent: &Agent) -> Vec<&'static str> {
    let code = agent.code_execution.is_some();
    let mut toolsets = vec!["file", "memory", "todo", "clarify", "session_search"];
    if agent.tools.contains(&Tool::Browser) {
        toolsets.push("browser");
    }
    if code || agent.tools.contains(&Tool::Exec) {
        toolsets.push("terminal");
    }
    if code {
        toolsets.push("code_execution");
    }
    if !agent.skills.is_empty() {
        toolsets.push("skills");
    }
    // `web` is web_search and web_extract; `search` web_search only, for
    // a spec without the extraction backend.
    let search = agent.search_url.is_some();
    if search && agent.extract_url.is_some() {
        toolsets.push("web");
    } else if search {
        toolsets.push("search");
    }
    toolsets.sort_unstable();
    toolsets
}

/// Where commands run. `code_network`: with code execution, whether its
/// containers get a network; `None` without code execution.
fn terminal(code_network: Option<bool>) -> Terminal {
    let Some(code_network) = code_network else {
        // Inside the agent's own gVisor sandbox; never a Docker socket.
        return Terminal {
            backend: "local",
            docker_image: None,
            docker_network: None,
            docker_forward_env: None,
            docker_mount_cwd_to_workspace: None,
            container_persistent: None,
            container_disk: None,
            docker_extra_args: None,
        };
    };
    // Through the code-execution sandbox's Docker daemon only: DOCKER_HOST
    // points at its socket. Hermes itself runs inner containers with
    // `--cap-drop ALL` (plus DAC_OVERRIDE, CHOWN, FOWNER, SETUID, SETGID),
    // no-new-privileges and a pids limit; `docker_network: false` adds
    // `--network=none`.
    Terminal {
        backend: "docker",
        // Loaded into the code sandbox at start; its tmpfs /var/lib/docker
        // has no other image and, without `code-network`, nothing can be
        // pulled.
        docker_image: Some(crate::generator::model::CODE_RUNNER_IMAGE),
        docker_network: Some(code_network),
        docker_forward_env: Some(Vec::new()),
        docker_mount_cwd_to_workspace: Some(false),
        // Workspace and home as tmpfs in the code container: the persistent
        // mode binds directories of Hermes' own state volume, which the
        // inner daemon can only read.
        container_persistent: Some(false),
        // No per-command disk quota, and saying so spares each Hermes start
        // a probe for one: Docker can set one only on overlay2 over XFS with
        // project quotas, and the inner dockerd stores on a tmpfs, so the
        // probe (`docker info`, then `docker create --storage-opt size=1m
        // hello-world`) always failed, after the approval broker had shown
        // the admin a card for `hello-world`. The code sandbox's
        // `/var/lib/docker` tmpfs (`code_storage`) bounds the disk instead.
        container_disk: Some(0),
        // Hermes runs each command with `docker exec`, and gVisor cannot
        // setns(2) into a PID namespace (runsc 20240729: "error executing
        // setns process"), so code containers share the code sandbox's PID
        // namespace: gVisor's, holding only the inner dockerd and the code
        // containers.
        docker_extra_args: Some(vec!["--pid=host"]),
    }
}
