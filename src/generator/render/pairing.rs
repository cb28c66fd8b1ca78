//! Pairing configs and units: the hub's server and each remote host's
//! client (schema in `crate::schema::pairing`, protocol in docs/pairing.md).

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::host::{WIREGUARD_KEY_DIR, device_unit, wireguard_unit};
use super::values::{GeneratedFile, Setting};
use super::{Tree, json};
use crate::generator::model::{Appliance, Host, OVERLAY_INTERFACE, STATE_DIR};
use crate::schema::pairing::{AgentFiles, CONFIG_SCHEMA, ClientConfig, Peer, ServerConfig};
use crate::schema::plan::Plan;

/// `appliance.pairing.server` (modules/pairing.nix), on the hub.
#[derive(Serialize)]
struct Server {
    enable: bool,
    /// `hosts/<hub>/pairing-server.json`.
    config: GeneratedFile,
    after: Vec<String>,
    requires: Vec<String>,
    wants: [&'static str; 1],
}

/// `appliance.pairing.client` (modules/pairing.nix), on each remote host.
#[derive(Serialize)]
struct Client {
    enable: bool,
    /// `hosts/<host>/pairing.json`.
    config: GeneratedFile,
    before: Vec<String>,
    after: Vec<String>,
    requires: Vec<String>,
    wants: [&'static str; 1],
}

fn key_file() -> String {
    format!("{WIREGUARD_KEY_DIR}/private.key")
}

/// The hub's server config: every other host with agents, by overlay
/// address, and where its agents' secrets are.
pub fn server_config(appliance: &Appliance, plan: &Plan) -> Option<ServerConfig> {
    let listen = appliance.matrix.pairing?;
    let mut peers = BTreeMap::new();
    for host in remote_hosts(appliance) {
        let Some(address) = host.overlay_address else { continue };
        let agents = agent_dirs(appliance, plan, host)
            .into_iter()
            .map(|(name, files)| (name, files.secrets_dir))
            .collect();
        peers.insert(
            address,
            Peer {
                host: host.name.clone(),
                public_key: host.wireguard_public_key.clone(),
                agents,
            },
        );
    }
    Some(ServerConfig {
        schema: CONFIG_SCHEMA,
        listen,
        state_dir: STATE_DIR.to_string(),
        private_key_file: key_file(),
        peers,
    })
}

/// A remote host's client config.
pub fn client_config(appliance: &Appliance, plan: &Plan, host: &Host) -> Option<ClientConfig> {
    let hub = appliance.matrix.pairing?;
    let matrix_host = appliance.hosts.get(&appliance.matrix.host)?;
    Some(ClientConfig {
        schema: CONFIG_SCHEMA,
        host: host.name.clone(),
        hub,
        hub_public_key: matrix_host.wireguard_public_key.clone(),
        state_dir: STATE_DIR.to_string(),
        private_key_file: key_file(),
        agents: agent_dirs(appliance, plan, host),
    })
}

/// Hosts other than the Matrix host that run agents.
fn remote_hosts(appliance: &Appliance) -> impl Iterator<Item = &Host> {
    appliance
        .hosts
        .values()
        .filter(|h| h.name != appliance.matrix.host && appliance.agents.values().any(|a| a.host == h.name))
}

/// The plan's secrets directory and owner of each agent on `host`.
fn agent_dirs(appliance: &Appliance, plan: &Plan, host: &Host) -> BTreeMap<String, AgentFiles> {
    let on_host: Vec<&str> = appliance
        .agents
        .values()
        .filter(|a| a.host == host.name)
        .map(|a| a.name.as_str())
        .collect();
    plan.accounts
        .iter()
        .filter(|account| on_host.contains(&account.localpart.as_str()))
        .map(|account| {
            (
                account.localpart.clone(),
                AgentFiles {
                    secrets_dir: account.secrets_dir.clone(),
                    uid: account.uid,
                    gid: account.gid,
                },
            )
        })
        .collect()
}

/// Both sides' config files; returns the `appliance.pairing` value of each
/// host that pairs. Pairing serves the overlay only: each side needs the
/// interface and starts once its address is up (host::wireguard_unit).
pub fn render(appliance: &Appliance, plan: &Plan, tree: &mut Tree) -> Result<BTreeMap<String, Setting>> {
    let mut settings = BTreeMap::new();
    let overlay_device = device_unit(OVERLAY_INTERFACE);
    let overlay_up = wireguard_unit(OVERLAY_INTERFACE);
    let overlay = || {
        vec![
            "network-online.target".to_string(),
            overlay_device.clone(),
            overlay_up.clone(),
        ]
    };
    if let Some(config) = server_config(appliance, plan) {
        let hub = &appliance.matrix.host;
        tree.insert(format!("hosts/{hub}/pairing-server.json"), json(&config)?);
        let mut after = vec!["appliance-bootstrap.service".to_string()];
        after.extend(overlay());
        let server = Server {
            enable: true,
            config: GeneratedFile::new(format!("hosts/{hub}/pairing-server.json")),
            after,
            requires: vec![overlay_device.clone()],
            wants: ["network-online.target"],
        };
        let comment = format!("Listens on {} only (the overlay).", config.listen);
        settings.insert(
            hub.clone(),
            Setting::new("appliance.pairing.server", server).with_notes(vec![comment]),
        );
    }
    for host in remote_hosts(appliance) {
        let Some(config) = client_config(appliance, plan, host) else {
            continue;
        };
        tree.insert(format!("hosts/{}/pairing.json", host.name), json(&config)?);
        let client = Client {
            enable: true,
            config: GeneratedFile::new(format!("hosts/{}/pairing.json", host.name)),
            before: host
                .sandboxes
                .iter()
                .map(|s| format!("docker-{}.service", s.name))
                .collect(),
            after: overlay(),
            requires: vec![overlay_device.clone()],
            wants: ["network-online.target"],
        };
        settings.insert(host.name.clone(), Setting::new("appliance.pairing.client", client));
    }
    Ok(settings)
}
