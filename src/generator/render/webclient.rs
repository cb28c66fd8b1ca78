//! The admins' web client on the Matrix host: Cinny behind nginx, on
//! loopback and the overlay (see `model::WebClient`).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::host::unit_deps_overlay_optional;
use super::values::Setting;
use crate::generator::model::{Appliance, Host, OVERLAY_INTERFACE};

/// `appliance.webClient` (modules/webclient.nix).
#[derive(Serialize)]
struct WebClient {
    enable: bool,
    listen: Vec<Listen>,
    /// Cinny's `homeserverList` (`cinny_config`).
    homeservers: serde_json::Value,
    synapse: String,
    #[serde(flatten)]
    unit: BTreeMap<&'static str, Value>,
}

#[derive(Serialize)]
struct Listen {
    addr: String,
    port: u16,
}

/// Cinny's `config.json` overrides: only this appliance's homeserver, as
/// the browser reaches it (the client's own origin, where nginx proxies
/// the Matrix API). Loopback first: that is where `ssh -L` lands.
pub fn cinny_config(appliance: &Appliance) -> serde_json::Value {
    let web = &appliance.matrix.web_client;
    let servers: Vec<String> = web.listen.iter().map(|a| format!("http://{a}:{}", web.port)).collect();
    serde_json::json!({
        "defaultHomeserver": 0,
        "homeserverList": servers,
        "allowCustomHomeservers": false,
    })
}

/// The admins' web client on the Matrix host `host`.
pub fn setting(appliance: &Appliance, host: &Host) -> Setting {
    let web = &appliance.matrix.web_client;
    let overlay = host
        .overlay_address
        .filter(|a| web.listen.contains(a))
        .map(|_| OVERLAY_INTERFACE);
    let client = WebClient {
        enable: true,
        listen: web
            .listen
            .iter()
            .map(|a| Listen {
                addr: a.to_string(),
                port: web.port,
            })
            .collect(),
        homeservers: cinny_config(appliance)["homeserverList"].clone(),
        synapse: format!("http://127.0.0.1:{}", appliance.matrix.port),
        // It binds the overlay address non-locally: it starts after the
        // address is up, but does not need it.
        unit: unit_deps_overlay_optional(Vec::new(), overlay),
    };
    Setting::new("appliance.webClient", client)
}
