//! What each agent may do on this appliance, beyond what the spec says:
//! tools that stay off because they could only reach a public service, and
//! the few loosened settings an agent's own config needs. Each kind's module
//! (`crate::generator::kinds`) decides its own; this module runs them and adds the
//! entries every kind shares. The renderers follow these decisions;
//! `appliance inspect` and `appliance check` show them.

use super::{Permissive, Warning};
use crate::generator::kinds;
use crate::generator::spec::schema::{AgentKind, Tool};

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
    /// The variables the egress proxy fills in for it (`credentials`): the
    /// sandbox holds placeholders, the operator adds nothing by hand.
    pub proxy_credentials: Vec<&'a str>,
}

pub fn apply(request: Request) -> Policy {
    let kind = kinds::of(request.kind);
    let mut warnings = Vec::new();
    let mut effective = Vec::new();
    for &tool in &request.tools {
        let decision = kind.tool(&request, tool);
        if decision.keep {
            effective.push(tool);
        }
        warnings.extend(decision.warning);
    }
    let notes = kind.policy(&request, &effective);
    warnings.extend(notes.warnings);
    let mut permissive = notes.permissive;
    // The shared entries, where the kind has not placed them itself.
    for entry in common::all(&request) {
        if !permissive.contains(&entry) {
            permissive.push(entry);
        }
    }
    Policy {
        tools: effective,
        permissive,
        warnings,
    }
}

/// Permissive settings that follow from the spec alone, whatever the kind.
pub mod common {
    use super::{Permissive, Request};

    pub fn all(request: &Request) -> Vec<Permissive> {
        code_network(request).into_iter().chain(published(request)).collect()
    }

    pub fn code_network(request: &Request) -> Option<Permissive> {
        request.code_network.then(|| Permissive {
            setting: "code-network = true".into(),
            reason: "executed code can reach the network: its Docker-in-gVisor sandbox (raw sockets, \
                     NET_ADMIN inside gVisor) joins the appliance bridge. The host firewall lets it reach \
                     only the bridge's DNS resolver and, with the agent's `egress`, the egress proxy: not \
                     Synapse, Ollama or the other sandboxes"
                .into(),
        })
    }

    pub fn published(request: &Request) -> Vec<Permissive> {
        request
            .publish
            .iter()
            .map(|port| Permissive {
                setting: format!("publish = {port}"),
                reason: format!(
                    "the agent's gateway is published on port {port} of every host interface (Docker's \
                     port forwarding bypasses the host firewall); it keeps token auth, but over plain HTTP"
                ),
            })
            .collect()
    }
}
