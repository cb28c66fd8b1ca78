//! Each agent's native configuration, from the model, one module per agent
//! kind. Secrets are never written here: configs refer to files or env vars
//! that `appliance bootstrap` creates in the agent's secrets directory at
//! runtime (see `bootstrap::plan`), which the sandbox mounts read-only at
//! [`SECRETS_MOUNT`] and passes as an env file.
//!
//! Every config starts from the agent's strict defaults and loosens only
//! what `Agent::permissive` lists; what is proven about each (and how) is in
//! docs/agents.md.

mod hermes;
pub mod openclaw;
mod picoclaw;

use anyhow::Result;

use super::{Tree, json, yaml};
use crate::model::{Appliance, MATRIX_TOKEN_FILE, SECRETS_MOUNT};
use crate::spec::schema::AgentKind;

pub fn render(appliance: &Appliance, tree: &mut Tree) -> Result<()> {
    for agent in appliance.agents.values() {
        let base = format!("agents/{}", agent.name);
        let published = appliance
            .sandbox(&agent.sandbox)
            .is_some_and(|(_, sandbox)| !sandbox.publish.is_empty());
        match agent.kind {
            AgentKind::Openclaw => {
                tree.insert(
                    format!("{base}/openclaw.json"),
                    json(&openclaw::config(agent, published))?,
                );
            }
            AgentKind::Picoclaw => {
                tree.insert(
                    format!("{base}/config.json"),
                    json(&picoclaw::config(agent, published))?,
                );
            }
            AgentKind::Hermes => {
                tree.insert(format!("{base}/config.yaml"), yaml(&hermes::config(agent))?);
            }
        }
    }
    Ok(())
}

/// The OpenAI-compatible endpoint of an Ollama URL.
fn openai_base(inference_url: &str) -> String {
    format!("{}/v1", inference_url.trim_end_matches('/'))
}
