//! Synapse's `homeserver.yaml` settings, hardened. Written as JSON (valid
//! YAML) so the NixOS module imports it and tests can run Synapse with it.

use std::net::Ipv4Addr;

use anyhow::Result;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Tree, json};
use crate::generator::model::{Appliance, STATE_DIR};
use crate::generator::spec::schema::SynapseDatabase;
use crate::schema::plan::synapse_secrets;

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

/// The role and database Synapse uses in PostgreSQL, named after its
/// system user so that peer authentication on the local socket maps one to
/// the other: no password anywhere.
pub const POSTGRES_NAME: &str = "matrix-synapse";

/// Synapse's `database` section. PostgreSQL through psycopg2 with no
/// `host`: libpq then uses its default socket directory, which nixpkgs'
/// PostgreSQL sets to `/run/postgresql`, and nixpkgs' Synapse module
/// (nixos/modules/services/matrix/synapse.nix, `hasLocalPostgresDB`: no
/// `host`, or a loopback one) orders and binds `matrix-synapse.service`
/// to the local PostgreSQL itself. A socket path as `host` would turn that
/// ordering off. Pool sizes are Synapse's own defaults, written out so
/// the connections PostgreSQL must allow are in the settings.
fn database(kind: SynapseDatabase) -> Value {
    match kind {
        SynapseDatabase::Postgresql => json!({
            "name": "psycopg2",
            "args": {
                "user": POSTGRES_NAME,
                "database": POSTGRES_NAME,
                "cp_min": 5,
                "cp_max": 10,
            }
        }),
        SynapseDatabase::Sqlite => json!({
            "name": "sqlite3",
            "args": { "database": "/var/lib/matrix-synapse/homeserver.db" }
        }),
    }
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
        "database": database(matrix.database),
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
        // Synapse on the host is behind no proxy, so whatever it connects
        // to on an agent's word is a way out: an HTTP pusher (any URL, its
        // `pushkey` carrying data), an identity server named in a request
        // (`/account/3pid/unbind` with `id_server`). Without federation it
        // needs no outbound connection at all: its outbound HTTP client
        // refuses every address (push, identity servers, key checks of
        // third-party invites), and the unit's own address filter
        // (`allowed_addresses`) holds whatever this misses.
        settings["ip_range_blacklist"] = json!(["0.0.0.0/0", "::/0"]);
        // Nothing to add or look up: no email, no phone, no identity server.
        settings["enable_3pid_changes"] = json!(false);
        settings["enable_3pid_lookup"] = json!(false);
    }
    settings
}

/// The only addresses the Synapse unit may exchange packets with (systemd
/// `IPAddressAllow`, with `IPAddressDeny = any`, which judge the remote
/// address of every packet the unit sends or receives; modules/synapse.nix
/// sets both): without federation, Synapse talks only with its clients, on
/// loopback (bootstrap, pairing, `ssh -L`), the sandboxes' bridge and the
/// overlay. `None` with federation: other homeservers are anywhere.
pub fn allowed_addresses(appliance: &Appliance) -> Option<Vec<String>> {
    if appliance.matrix.federation {
        return None;
    }
    let mut allow = vec!["localhost".to_string(), appliance.network.to_string()];
    allow.extend(appliance.overlay.map(|o| o.to_string()));
    Some(allow)
}

pub fn render(appliance: &Appliance, tree: &mut Tree) -> Result<()> {
    tree.insert(
        format!("hosts/{}/synapse.json", appliance.matrix.host),
        json(&settings(appliance))?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::test_support::default_spec;

    /// Without federation Synapse opens no connection out: its own HTTP
    /// client refuses every address, and the unit may only talk with
    /// loopback, the bridge and the overlay.
    #[test]
    fn without_federation_synapse_connects_nowhere() {
        let appliance = default_spec();
        assert!(!appliance.matrix.federation);
        let settings = settings(&appliance);
        assert_eq!(settings["ip_range_blacklist"], json!(["0.0.0.0/0", "::/0"]));
        assert_eq!(settings["enable_3pid_changes"], json!(false));
        let overlay = appliance.overlay.unwrap().to_string();
        assert_eq!(
            allowed_addresses(&appliance).unwrap(),
            ["localhost".to_string(), appliance.network.to_string(), overlay]
        );
        // ... and the committed options of the Matrix host say so.
        // (modules/synapse.nix turns the list into `IPAddressAllow`, with
        // `IPAddressDeny = "any"`; tests/flake/modules.rs checks it.)
        let synapse = &committed_options(&appliance.matrix.host)["appliance"]["synapse"];
        assert_eq!(synapse["allowedAddresses"][0], "localhost", "{synapse}");
    }

    /// The committed option values of `host` (generated/hosts/<host>/options.json).
    fn committed_options(host: &str) -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("generated/hosts/{host}/options.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Synapse keeps its state in PostgreSQL unless the spec asks for
    /// SQLite: its own docs call SQLite fit for testing only. The role and
    /// database are Synapse's system user's name (peer authentication, no
    /// password), with no `host` so that nixpkgs' module orders Synapse
    /// after the local PostgreSQL; modules/synapse.nix makes the cluster
    /// with C collation, which Synapse requires, when the Matrix host's
    /// module sets `appliance.synapse.postgresql`.
    #[test]
    fn synapse_runs_on_postgresql_unless_the_spec_asks_for_sqlite() {
        let mut appliance = default_spec();
        assert_eq!(appliance.matrix.database, SynapseDatabase::Postgresql);
        let database = &settings(&appliance)["database"];
        assert_eq!(database["name"], "psycopg2");
        assert_eq!(database["args"]["user"], POSTGRES_NAME);
        assert_eq!(database["args"]["database"], POSTGRES_NAME);
        assert!(database["args"].get("password").is_none());
        assert!(database["args"].get("host").is_none());
        // The Matrix host's options ask modules/synapse.nix for that
        // database (the C-locale cluster, the role, no TCP listener:
        // tests/flake/modules.rs checks what the module makes of it).
        let postgres = &committed_options(&appliance.matrix.host)["appliance"]["synapse"]["postgresql"];
        assert_eq!(postgres, &json!({"enable": true, "name": POSTGRES_NAME}));

        appliance.matrix.database = SynapseDatabase::Sqlite;
        let database = &settings(&appliance)["database"];
        assert_eq!(database["name"], "sqlite3");
        assert_eq!(database["args"]["database"], "/var/lib/matrix-synapse/homeserver.db");
    }

    /// With federation, other homeservers are anywhere: no filter, and
    /// Synapse's own refused ranges stay its defaults (private addresses).
    #[test]
    fn with_federation_synapse_reaches_other_homeservers() {
        let mut appliance = default_spec();
        appliance.matrix.federation = true;
        assert!(allowed_addresses(&appliance).is_none());
        assert!(settings(&appliance).get("ip_range_blacklist").is_none());
    }
}
