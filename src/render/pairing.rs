//! Pairing configs and units: the hub's server and each remote host's
//! client (schema in `crate::pairing::config`, protocol in docs/pairing.md).

use std::collections::BTreeMap;

use anyhow::Result;
use minijinja::Value;
use serde::Serialize;

use super::host::{WIREGUARD_KEY_DIR, device_unit, wireguard_unit};
use super::nix;
use super::templates::Engine;
use super::{STAMP, Tree, json};
use crate::bootstrap::plan::Plan;
use crate::model::{Appliance, Host, OVERLAY_INTERFACE, STATE_DIR};
use crate::pairing::config::{AgentFiles, CONFIG_SCHEMA, ClientConfig, Peer, ServerConfig};

/// Module files, next to the host's `default.nix`.
pub const SERVER_FILE: &str = "pairing-server.nix";
pub const CLIENT_FILE: &str = "pairing.nix";

#[derive(Serialize)]
struct ServerContext {
    stamp: &'static str,
    host: String,
    listen: String,
    interface: &'static str,
    after: Vec<String>,
    requires: Vec<String>,
}

#[derive(Serialize)]
struct ClientContext {
    stamp: &'static str,
    host: String,
    before: Vec<String>,
    after: Vec<String>,
    requires: Vec<String>,
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

/// Both sides' files; returns the module files each host imports.
pub fn render(
    appliance: &Appliance,
    plan: &Plan,
    engine: &Engine,
    tree: &mut Tree,
) -> Result<BTreeMap<String, String>> {
    let mut imports = BTreeMap::new();
    // Pairing serves the overlay only: it needs the interface and starts
    // once its address is up (host::wireguard_unit).
    let overlay_device = device_unit(OVERLAY_INTERFACE);
    let overlay_up = wireguard_unit(OVERLAY_INTERFACE);
    if let Some(config) = server_config(appliance, plan) {
        let hub = &appliance.matrix.host;
        tree.insert(format!("hosts/{hub}/pairing-server.json"), json(&config)?);
        let context = ServerContext {
            stamp: STAMP,
            host: hub.clone(),
            listen: config.listen.to_string(),
            interface: OVERLAY_INTERFACE,
            after: vec![
                "appliance-bootstrap.service".into(),
                "network-online.target".into(),
                overlay_device.clone(),
                overlay_up.clone(),
            ],
            requires: vec![overlay_device.clone()],
        };
        tree.insert(
            format!("hosts/{hub}/{SERVER_FILE}"),
            engine.render("pairing-server.nix.j2", &context)?.into_bytes(),
        );
        imports.insert(hub.clone(), SERVER_FILE.to_string());
    }
    for host in remote_hosts(appliance) {
        let Some(config) = client_config(appliance, plan, host) else {
            continue;
        };
        tree.insert(format!("hosts/{}/pairing.json", host.name), json(&config)?);
        let context = ClientContext {
            stamp: STAMP,
            host: host.name.clone(),
            before: host
                .sandboxes
                .iter()
                .map(|s| format!("docker-{}.service", s.name))
                .collect(),
            after: vec![
                "network-online.target".into(),
                overlay_device.clone(),
                overlay_up.clone(),
            ],
            requires: vec![overlay_device.clone()],
        };
        tree.insert(
            format!("hosts/{}/{CLIENT_FILE}", host.name),
            engine.render("pairing-client.nix.j2", &context)?.into_bytes(),
        );
        imports.insert(host.name.clone(), CLIENT_FILE.to_string());
    }
    Ok(imports)
}

/// Nix list of the extra modules a host's `default.nix` imports.
pub fn imports_value(files: &[String]) -> Value {
    Value::from(
        files
            .iter()
            .map(|f| nix::expr(nix::path(&format!("./{f}"))))
            .collect::<Vec<Value>>(),
    )
}
