//! SearXNG's `settings.yml`, for the `crawler` tool's search sandbox. On
//! top of SearXNG's defaults (`use_default_settings`): a private instance
//! (no rate limiter, which would need Valkey; no image proxy; no public
//! instance features), JSON results for Hermes, its engines' traffic
//! through the egress proxy, and the secret key from
//! `SEARXNG_SECRET` in the env file the host makes, never from this file.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::Result;
use serde::Serialize;

use super::{Tree, yaml};
use crate::generator::model::services::{SEARCH_PORT, SEARCH_SANDBOX, SEARCH_SETTINGS};
use crate::generator::model::{Appliance, egress};

#[derive(Debug, Serialize)]
pub struct Settings {
    use_default_settings: bool,
    general: General,
    server: Server,
    search: Search,
    outgoing: Outgoing,
}

/// SearXNG's engines reach the web through the egress proxy only.
#[derive(Debug, Serialize)]
struct Outgoing {
    proxies: BTreeMap<&'static str, Vec<String>>,
}

#[derive(Debug, Serialize)]
struct General {
    instance_name: &'static str,
    enable_metrics: bool,
}

#[derive(Debug, Serialize)]
struct Server {
    /// Every address of the sandbox's own netstack: only its bridge address.
    bind_address: &'static str,
    port: u16,
    limiter: bool,
    public_instance: bool,
    image_proxy: bool,
    method: &'static str,
}

#[derive(Debug, Serialize)]
struct Search {
    /// Hermes asks `/search?format=json`; SearXNG serves HTML only unless
    /// told.
    formats: Vec<&'static str>,
    safe_search: u8,
    autocomplete: &'static str,
}

pub fn settings(gateway: Ipv4Addr) -> Settings {
    Settings {
        use_default_settings: true,
        general: General {
            instance_name: "appliance",
            enable_metrics: false,
        },
        server: Server {
            bind_address: "0.0.0.0",
            port: SEARCH_PORT,
            limiter: false,
            public_instance: false,
            image_proxy: false,
            method: "GET",
        },
        search: Search {
            formats: vec!["html", "json"],
            safe_search: 0,
            autocomplete: "",
        },
        outgoing: Outgoing {
            proxies: BTreeMap::from([("all://", vec![egress::proxy_url(gateway)])]),
        },
    }
}

pub fn render(appliance: &Appliance, tree: &mut Tree) -> Result<()> {
    let used = appliance
        .hosts
        .values()
        .any(|h| h.sandboxes.iter().any(|s| s.name == SEARCH_SANDBOX));
    if used {
        tree.insert(
            SEARCH_SETTINGS.to_string(),
            yaml(&settings(appliance.network.gateway()))?,
        );
    }
    Ok(())
}
