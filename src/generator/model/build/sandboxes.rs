//! Once every reference is valid: each agent's sandboxes on its host, with
//! their network addresses; then each host's runtimes and firewall.

use std::collections::{BTreeMap, BTreeSet};

use super::{Builder, span};
use crate::generator::model::sandbox::{self, SandboxInputs};
use crate::generator::model::services;
use crate::generator::model::{Agent, Host, Inference, Matrix, Subnet, firewall};
use crate::generator::runsc::Profile;

/// Puts every agent's sandboxes on its host, addresses counted from `.10`
/// per host in agent order.
pub(super) fn place(
    b: &mut Builder,
    hosts: &mut BTreeMap<String, Host>,
    agents: &BTreeMap<String, Agent>,
    network: Subnet,
) {
    let spec = b.spec;
    let agent_specs: BTreeMap<&str, _> = spec.agents.iter().map(|(n, a)| (n.get_ref().as_str(), a)).collect();
    let mut next_address: BTreeMap<String, u32> = BTreeMap::new();
    for agent in agents.values() {
        let host = hosts.get_mut(&agent.host).expect("agent host checked");
        let counter = next_address.entry(host.name.clone()).or_insert(10);
        let sandboxes = sandbox::for_agent(&SandboxInputs {
            agent,
            spec: agent_specs[agent.name.as_str()],
            network: &network,
            gpu: host.gpu.as_ref(),
        });
        for mut sandbox in sandboxes {
            if let Some(network_slot) = sandbox.network.as_mut() {
                match network.host(*counter) {
                    Some(address) => network_slot.address = address,
                    None => {
                        let at = spec
                            .appliance
                            .network
                            .as_ref()
                            .map_or_else(|| span(&spec.appliance.name), span);
                        b.error(
                            at,
                            format!(
                                "the appliance network `{network}` has no address left for sandbox `{}`",
                                sandbox.name
                            ),
                            "use a larger subnet in `[appliance].network`",
                        );
                    }
                }
                *counter += 1;
            }
            host.sandboxes.push(sandbox);
        }
    }
}

/// Ollama's sandbox on its host, in `gvisor` mode, before the agents'.
pub(super) fn place_inference(hosts: &mut BTreeMap<String, Host>, inference: Option<&Inference>, network: Subnet) {
    let Some(inference) = inference.filter(|i| i.sandbox.is_some()) else {
        return;
    };
    let host = hosts.get_mut(&inference.host).expect("inference host checked");
    let sandbox = services::inference_sandbox(inference, host.gpu.as_ref(), &network);
    host.sandboxes.insert(0, sandbox);
}

/// A SearXNG sandbox on each host with an agent whose `crawler` tool uses it.
pub(super) fn place_search(hosts: &mut BTreeMap<String, Host>, agents: &BTreeMap<String, Agent>, network: Subnet) {
    for host in hosts.values_mut() {
        let clients = clients_on(host, agents, |a| a.search_url.is_some());
        if !clients.is_empty() {
            let at = host.sandboxes.len().min(1);
            host.sandboxes
                .insert(at, services::search_sandbox(&host.name, &clients, &network));
        }
    }
}

/// A webextract sandbox on each host with an agent whose `crawler` tool
/// uses it, after the host's SearXNG.
pub(super) fn place_extract(hosts: &mut BTreeMap<String, Host>, agents: &BTreeMap<String, Agent>, network: Subnet) {
    for host in hosts.values_mut() {
        let clients = clients_on(host, agents, |a| a.extract_url.is_some());
        if !clients.is_empty() {
            let at = host
                .sandboxes
                .iter()
                .position(|s| s.name == services::SEARCH_SANDBOX)
                .map_or(0, |i| i + 1);
            host.sandboxes
                .insert(at, services::extract_sandbox(&host.name, &clients, &network));
        }
    }
}

/// The names of the agents on `host` that use a service (`uses`).
fn clients_on(host: &Host, agents: &BTreeMap<String, Agent>, uses: fn(&Agent) -> bool) -> Vec<String> {
    agents
        .values()
        .filter(|a| a.host == host.name && uses(a))
        .map(|a| a.name.clone())
        .collect()
}

/// What each host runs, the Docker runtimes its sandboxes need, and the
/// holes in its firewall.
pub(super) fn finish_hosts(
    hosts: &mut BTreeMap<String, Host>,
    matrix: &Matrix,
    inference: Option<&Inference>,
    linked: bool,
) {
    for host in hosts.values_mut() {
        host.runs_matrix = host.name == matrix.host;
        host.runs_inference = inference.is_some_and(|i| i.host == host.name);
        // The strict runtime is always there: it is Docker's default.
        let mut profiles: BTreeSet<Profile> = BTreeSet::from([Profile::STRICT]);
        for sandbox in &host.sandboxes {
            profiles.insert(sandbox.profile.clone());
        }
        host.runtimes = profiles.into_iter().collect();
        host.firewall = firewall::rules(host, matrix, inference, linked);
    }
}

/// The grant file of each sandbox the admins may widen for a while
/// (docs/warden.md, "Egress grants"): an agent's own sandbox, with a
/// network and a domain list, on the Matrix host (where the warden that
/// writes the file runs, beside that host's proxy), unless its spec says
/// `grants = false`. A `web` sandbox needs none; one without proxy egress,
/// or on another host, cannot have any.
pub(super) fn place_grants(hosts: &mut BTreeMap<String, Host>, agents: &BTreeMap<String, Agent>, matrix: &Matrix) {
    let Some(host) = hosts.get_mut(&matrix.host) else {
        return;
    };
    for agent in agents.values().filter(|a| a.grants && a.host == matrix.host) {
        if let Some(sandbox) = host.sandboxes.iter_mut().find(|s| s.name == agent.sandbox)
            && sandbox.network.is_some()
            && matches!(sandbox.egress, crate::generator::model::Egress::Domains(_))
        {
            sandbox.grants = Some(crate::common::grants::grants_file(&sandbox.name));
        }
    }
}
