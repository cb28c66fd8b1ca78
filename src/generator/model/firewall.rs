//! Which ports a host opens, on which interface, and why. Everything else
//! stays closed: Synapse and Ollama are reachable from the sandboxes' bridge
//! (and the overlay when another host's agents use them), never from outside.

use serde::Serialize;

use super::build::{DNS_PORT, SSH_PORT};
use super::{Host, Inference, Matrix, WIREGUARD_PORT};

/// Docker network shared by a host's sandboxes.
pub const NETWORK_NAME: &str = "appliance";
/// Linux name of that network's bridge, so the firewall can name it.
pub const BRIDGE_INTERFACE: &str = "br-appliance";
/// WireGuard interface linking the hosts.
pub const OVERLAY_INTERFACE: &str = "wg-appliance";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FirewallRule {
    /// `None` opens the port on every interface.
    pub interface: Option<String>,
    pub protocol: String,
    pub port: u16,
    pub reason: String,
}

fn rule(interface: Option<&str>, protocol: &str, port: u16, reason: String) -> FirewallRule {
    FirewallRule {
        interface: interface.map(str::to_string),
        protocol: protocol.to_string(),
        port,
        reason,
    }
}

pub fn rules(host: &Host, matrix: &Matrix, inference: Option<&Inference>, overlay: bool) -> Vec<FirewallRule> {
    let mut rules = vec![rule(None, "tcp", SSH_PORT, "SSH, key-only".into())];
    if overlay {
        rules.push(rule(
            None,
            "udp",
            WIREGUARD_PORT,
            "WireGuard link between the appliance hosts".into(),
        ));
    }
    // The inference sandbox's overlay port is the Ollama rule below.
    for sandbox in host.sandboxes.iter().filter(|s| s.publish_on.is_none()) {
        for port in &sandbox.publish {
            rules.push(rule(
                None,
                "tcp",
                *port,
                format!("published by sandbox `{}` (declared in the spec)", sandbox.name),
            ));
        }
    }
    if host.resolves_names() {
        for protocol in ["udp", "tcp"] {
            rules.push(rule(
                Some(BRIDGE_INTERFACE),
                protocol,
                DNS_PORT,
                "DNS resolver for this host's sandboxes with `egress = \"web\"` (the egress table refuses it to the others)".into(),
            ));
        }
    }
    if host
        .sandboxes
        .iter()
        .any(|s| s.network.is_some() && s.egress.uses_proxy())
    {
        rules.push(rule(
            Some(BRIDGE_INTERFACE),
            "tcp",
            super::egress::PROXY_PORT,
            "egress proxy for this host's sandboxes with `egress`".into(),
        ));
    }
    if host.runs_matrix {
        rules.extend(matrix_rules(host, matrix, overlay));
    }
    if let Some(inference) = inference.filter(|_| host.runs_inference) {
        rules.extend(inference_rules(host, inference, overlay));
    }
    rules.sort();
    rules
}

/// The Matrix host's ports: Matrix on the bridge and, where other hosts
/// reach them, Matrix, pairing and the web client on the overlay.
fn matrix_rules(host: &Host, matrix: &Matrix, overlay: bool) -> Vec<FirewallRule> {
    let mut rules = Vec::new();
    rules.push(rule(
        Some(BRIDGE_INTERFACE),
        "tcp",
        matrix.port,
        "Matrix for this host's sandboxes".into(),
    ));
    if overlay && host.overlay_address.is_some_and(|a| matrix.bind_addresses.contains(&a)) {
        rules.push(rule(
            Some(OVERLAY_INTERFACE),
            "tcp",
            matrix.port,
            "Matrix for other hosts' agents".into(),
        ));
    }
    if let Some(pairing) = matrix.pairing {
        rules.push(rule(
            Some(OVERLAY_INTERFACE),
            "tcp",
            pairing.port(),
            "pairing: other hosts fetch their agents' Matrix credentials".into(),
        ));
    }
    if overlay
        && host
            .overlay_address
            .is_some_and(|a| matrix.web_client.listen.contains(&a))
    {
        rules.push(rule(
            Some(OVERLAY_INTERFACE),
            "tcp",
            matrix.web_client.port,
            format!(
                "{}, the admins' Matrix web client (also on loopback, for `ssh -L`)",
                matrix.web_client.client
            ),
        ));
    }
    rules
}

/// Ollama's ports, on the host that runs it.
fn inference_rules(host: &Host, inference: &Inference, overlay: bool) -> Vec<FirewallRule> {
    let mut rules = Vec::new();
    // In its own sandbox, Ollama is reached across the bridge (and,
    // from other hosts, through the port Docker publishes on the overlay
    // address), never on an address of the host itself.
    let on_host = inference.sandbox.is_none();
    if on_host {
        rules.push(rule(
            Some(BRIDGE_INTERFACE),
            "tcp",
            inference.port,
            "Ollama for this host's sandboxes".into(),
        ));
    }
    let remote = inference.overlay_address.is_some() || Some(inference.bind_address) == host.overlay_address;
    if overlay && remote {
        rules.push(rule(
            Some(OVERLAY_INTERFACE),
            "tcp",
            inference.port,
            "Ollama for other hosts' agents".into(),
        ));
    }
    rules
}
