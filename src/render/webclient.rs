//! The admins' web client on the Matrix host: Cinny behind nginx, on
//! loopback and the overlay (see `model::WebClient`).

use std::collections::BTreeMap;

use anyhow::Result;
use minijinja::Value;
use serde::Serialize;

use super::host::unit_deps_overlay_optional;
use super::nix;
use super::templates::Engine;
use super::{STAMP, Tree};
use crate::model::{Appliance, Host, OVERLAY_INTERFACE};

/// File of the module, next to the host's `default.nix`.
pub const FILE: &str = "admins.nix";

#[derive(Serialize)]
struct WebClientContext {
    stamp: &'static str,
    host: String,
    cinny_config: Value,
    listen: Value,
    synapse: String,
    proxied: Vec<&'static str>,
    max_body: &'static str,
    deps: BTreeMap<&'static str, Value>,
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

pub fn render(appliance: &Appliance, host: &Host, engine: &Engine, tree: &mut Tree) -> Result<()> {
    let web = &appliance.matrix.web_client;
    let listen: Vec<BTreeMap<&str, Value>> = web
        .listen
        .iter()
        .map(|a| BTreeMap::from([("addr", Value::from(a.to_string())), ("port", Value::from(web.port))]))
        .collect();
    let overlay = host
        .overlay_address
        .filter(|a| web.listen.contains(a))
        .map(|_| OVERLAY_INTERFACE);
    let context = WebClientContext {
        stamp: STAMP,
        host: host.name.clone(),
        cinny_config: nix::value(cinny_config(appliance)),
        listen: nix::value(listen),
        synapse: format!("http://127.0.0.1:{}", appliance.matrix.port),
        // The client-server API and Synapse's client pages (password reset
        // and SSO pages live under `/_synapse/client`).
        proxied: vec!["/_matrix/", "/_synapse/client/"],
        max_body: "50M",
        deps: unit_deps_overlay_optional(Vec::new(), overlay),
    };
    let text = engine.render("admins.nix.j2", &context)?;
    tree.insert(format!("hosts/{}/{FILE}", host.name), text.into_bytes());
    Ok(())
}
