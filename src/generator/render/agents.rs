//! Each agent's native configuration, from the model, written by the
//! agent's kind (`crate::generator::kinds::<kind>::config`). Secrets are never written
//! here: configs refer to files or env vars that `appliance bootstrap`
//! creates in the agent's secrets directory at runtime (see
//! `bootstrap::plan`), which the sandbox mounts read-only at
//! `model::SECRETS_MOUNT` and passes as an env file.
//!
//! Every config starts from the agent's strict defaults and loosens only
//! what `Agent::permissive` lists; what is proven about each (and how) is in
//! docs/agents.md.

use anyhow::Result;

use super::Tree;
use crate::generator::kinds;
use crate::generator::model::Appliance;

pub fn render(appliance: &Appliance, tree: &mut Tree) -> Result<()> {
    for agent in appliance.agents.values() {
        let kind = kinds::of(agent.kind);
        let published = appliance
            .sandbox(&agent.sandbox)
            .is_some_and(|(_, sandbox)| !sandbox.publish.is_empty());
        tree.insert(
            format!("agents/{}/{}", agent.name, kind.sandbox().config_file),
            kind.config(agent, published)?,
        );
    }
    Ok(())
}
