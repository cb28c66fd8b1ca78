//! Each agent's native configuration, from the model. Secrets are never
//! written here: configs refer to env vars or files that `appliance
//! bootstrap` creates on the host at runtime.

use anyhow::Result;
use serde_json::{Value, json};

use super::{STAMP, Tree, json};
use crate::model::{Agent, Appliance};
use crate::spec::schema::{AgentKind, Tool};

pub fn render(appliance: &Appliance, tree: &mut Tree) -> Result<()> {
    for agent in appliance.agents.values() {
        let base = format!("agents/{}", agent.name);
        match agent.kind {
            AgentKind::Openclaw => {
                tree.insert(format!("{base}/openclaw.json"), json(&openclaw(agent))?);
            }
            AgentKind::Picoclaw => {
                tree.insert(format!("{base}/config.json"), json(&picoclaw(agent))?);
            }
            AgentKind::Hermes => {
                // YAML is a superset of JSON, so a comment line plus JSON is
                // valid YAML and needs no YAML serializer.
                let mut text = format!("# {STAMP} from the appliance spec; do not edit.\n");
                text.push_str(&serde_json::to_string_pretty(&hermes(agent))?);
                text.push('\n');
                tree.insert(format!("{base}/config.yaml"), text.into_bytes());
            }
        }
    }
    Ok(())
}

fn openclaw(agent: &Agent) -> Value {
    let model = agent.model.clone().unwrap_or_default();
    let mut config = json!({
        "gateway": {
            "mode": "local",
            "port": 18789,
            "bind": "loopback",
            "auth": { "mode": "token", "token": "${OPENCLAW_GATEWAY_TOKEN}" }
        },
        "agents": {
            "defaults": {
                "model": { "primary": format!("ollama/{model}") },
                // gVisor is the boundary; OpenClaw's own Docker sandbox would
                // need the host's Docker socket.
                "sandbox": { "mode": "off" }
            }
        },
        "channels": {
            "matrix": {
                "enabled": true,
                "homeserver": agent.homeserver_url,
                "userId": agent.user_id,
                "accessToken": "${MATRIX_ACCESS_TOKEN}",
                "encryption": false,
                "dm": { "policy": "allowlist", "allowFrom": agent.allowed_users },
                "groupPolicy": "allowlist",
                "groupAllowFrom": agent.allowed_users,
                "autoJoin": "allowlist",
                "autoJoinAllowlist": agent.rooms,
            }
        }
    });
    if let Some(url) = &agent.inference_url {
        config["models"] = json!({
            "providers": {
                "ollama": {
                    // Ollama's native API: `/v1` breaks OpenClaw's tool calls.
                    "baseUrl": url,
                    "apiKey": "ollama-local",
                    "api": "ollama",
                    "models": [{ "id": model, "name": model, "contextWindow": agent.context }]
                }
            }
        });
    }
    if agent.tools.contains(&Tool::Browser) {
        config["browser"] = json!({
            "enabled": true,
            "headless": true,
            // Chromium's own sandbox cannot start inside gVisor; the gVisor
            // sandbox is the boundary.
            "noSandbox": true
        });
    }
    config
}

fn picoclaw(agent: &Agent) -> Value {
    let model = agent.model.clone().unwrap_or_default();
    json!({
        "version": 3,
        "agents": {
            "defaults": {
                "workspace": "/var/lib/picoclaw/workspace",
                "restrict_to_workspace": true,
                "model_name": model,
                "context_window": agent.context
            }
        },
        "model_list": [{
            "model_name": model,
            "provider": "ollama",
            "model": model,
            "api_base": agent.inference_url.as_ref().map(|u| format!("{u}/v1"))
        }],
        "channel_list": {
            "matrix": {
                "enabled": true,
                "type": "matrix",
                "allow_from": agent.allowed_users,
                "settings": {
                    "homeserver": agent.homeserver_url,
                    "user_id": agent.user_id,
                    "join_on_invite": false
                }
            }
        },
        "tools": {
            "exec": { "enabled": agent.tools.contains(&Tool::Exec), "allow_remote": agent.remote_exec }
        },
        "gateway": { "host": "127.0.0.1", "port": 18790 }
    })
}

fn hermes(agent: &Agent) -> Value {
    json!({
        "model": {
            "default": agent.model,
            "provider": "custom",
            "base_url": agent.inference_url.as_ref().map(|u| format!("{u}/v1")),
            "context_length": agent.context
        },
        "matrix": {
            "allowed_users": agent.allowed_users,
            "allowed_rooms": agent.rooms,
            "require_mention": true
        },
        "web": { "keyless_fallback": false },
        "terminal": {
            "backend": if agent.code_execution.is_some() { "docker" } else { "local" },
            "docker_network": agent.code_network
        }
    })
}
