//! Synapse's `homeserver.yaml` settings, hardened. Written as JSON (valid
//! YAML) so the NixOS module imports it and tests can run Synapse with it.

use std::net::Ipv4Addr;

use anyhow::Result;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Tree, json};
use crate::bootstrap::plan::synapse_secrets;
use crate::model::{Appliance, STATE_DIR};

/// Path of one of Synapse's own secrets, created by `appliance bootstrap`
/// before Synapse first starts (see `bootstrap::plan::synapse_secrets`).
fn secret_path(file: &str) -> String {
    format!("{STATE_DIR}/{}/{file}", synapse_secrets().dir)
}

#[derive(Debug, Serialize)]
pub struct Listener {
    pub port: u16,
    pub bind_addresses: Vec<Ipv4Addr>,
    #[serde(rename = "type")]
    pub kind: String,
    pub tls: bool,
    pub x_forwarded: bool,
    pub resources: Vec<Value>,
}

/// The settings as a JSON object, so tests can override paths and ports.
pub fn settings(appliance: &Appliance) -> Value {
    let matrix = &appliance.matrix;
    let secrets = synapse_secrets();
    let mut resources = vec!["client"];
    if matrix.federation {
        resources.push("federation");
    }
    let listener = Listener {
        port: matrix.port,
        bind_addresses: matrix.bind_addresses.clone(),
        kind: "http".into(),
        tls: false,
        x_forwarded: false,
        resources: vec![json!({ "names": resources, "compress": false })],
    };
    let public_address = matrix.bind_addresses.get(1).copied().unwrap_or(Ipv4Addr::LOCALHOST);
    let mut settings = json!({
        "server_name": matrix.server_name,
        "public_baseurl": format!("http://{public_address}:{}/", matrix.port),
        "report_stats": false,
        "listeners": [listener],
        "database": {
            "name": "sqlite3",
            "args": { "database": "/var/lib/matrix-synapse/homeserver.db" }
        },
        // Accounts are made by `appliance bootstrap` through the shared
        // secret; nobody can sign up.
        "enable_registration": false,
        "registration_shared_secret_path": secret_path(&secrets.registration_shared_secret),
        "macaroon_secret_key_path": secret_path(&secrets.macaroon_secret_key),
        "form_secret_path": secret_path(&secrets.form_secret),
        "allow_guest_access": false,
        // No fetching of keys or previews from the internet.
        "trusted_key_servers": [],
        "url_preview_enabled": false,
        "presence": { "enabled": false },
        "allow_public_rooms_without_auth": false,
        "allow_public_rooms_over_federation": false,
        "require_auth_for_profile_requests": true,
        "limit_profile_requests_to_users_who_share_rooms": true,
        "user_directory": { "search_all_users": false },
        "max_upload_size": "50M",
        // Only server admins (the bootstrap account, the human admins) can
        // invite. No other account can pull an agent into a room or a DM:
        // Hermes 0.19.0 logs "rejecting invite" from a stranger and then
        // joins the still-pending invite anyway.
        "block_non_admin_invites": true,
    });
    if !matrix.federation {
        // An empty allowlist refuses every remote server.
        settings["federation_domain_whitelist"] = json!([]);
        settings["allow_profile_lookup_over_federation"] = json!(false);
        settings["allow_device_name_lookup_over_federation"] = json!(false);
    }
    settings
}

pub fn render(appliance: &Appliance, tree: &mut Tree) -> Result<()> {
    tree.insert(
        format!("hosts/{}/synapse.json", appliance.matrix.host),
        json(&settings(appliance))?,
    );
    Ok(())
}
