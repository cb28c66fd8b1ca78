//! The pairing configs' schema: written by `appliance generate` (the
//! renderer builds them from the model), read by `appliance pair` and
//! `appliance pair-serve` on the hosts. Like the bootstrap plan's schema it
//! imports nothing above the foundation (docs/architecture.md, "Layers").

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Bumped when a field of either config changes meaning.
pub const CONFIG_SCHEMA: u32 = 1;
/// The hub's side (`generated/hosts/<hub>/pairing-server.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub schema: u32,
    pub listen: SocketAddrV4,
    pub state_dir: String,
    /// The hub's WireGuard private key (made on the hub at first boot).
    pub private_key_file: String,
    /// Remote hosts by overlay address.
    pub peers: BTreeMap<Ipv4Addr, Peer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub host: String,
    /// `None` until the spec has the host's key: such a peer gets nothing.
    pub public_key: Option<String>,
    /// Agent name -> its secrets directory, relative to `state_dir`.
    pub agents: BTreeMap<String, String>,
}

/// A remote host's side (`generated/hosts/<host>/pairing.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub schema: u32,
    pub host: String,
    /// The hub's pairing server, on its overlay address.
    pub hub: SocketAddrV4,
    pub hub_public_key: Option<String>,
    pub state_dir: String,
    pub private_key_file: String,
    pub agents: BTreeMap<String, AgentFiles>,
}

/// Where one agent's handed files go, and who owns them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFiles {
    /// Relative to `state_dir`.
    pub secrets_dir: String,
    pub uid: u32,
    pub gid: u32,
}

/// Reads a JSON config of either side, refusing another schema.
pub fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("failed to read pairing config `{}`", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("failed to parse pairing config `{}`", path.display()))?;
    let schema = value.get("schema").and_then(serde_json::Value::as_u64);
    if schema != Some(u64::from(CONFIG_SCHEMA)) {
        bail!(
            "pairing config `{}` has schema {schema:?}, this `appliance` reads schema {CONFIG_SCHEMA}\nhint: regenerate it with `appliance generate` from the same version",
            path.display()
        );
    }
    serde_json::from_value(value).with_context(|| format!("failed to parse pairing config `{}`", path.display()))
}
