//! `default.nix` at the root of the generated tree: the hosts, their
//! targets, systems, modules and sandbox images, and which host runs
//! Matrix, for the flake to build from (configurations, images, VM test).

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::nix::{self, expr};
use super::templates::Engine;
use super::{STAMP, Tree};
use crate::model::Appliance;

#[derive(Serialize)]
struct IndexContext {
    stamp: &'static str,
    name: String,
    matrix_host: String,
    hosts: BTreeMap<String, BTreeMap<&'static str, minijinja::Value>>,
}

pub fn render(appliance: &Appliance, engine: &Engine, tree: &mut Tree) -> Result<()> {
    let mut hosts = BTreeMap::new();
    for host in appliance.hosts.values() {
        let mut entry = BTreeMap::new();
        entry.insert("target", nix::value(host.target));
        entry.insert("system", nix::value(host.system));
        entry.insert("module", expr(format!("./hosts/{}", host.name)));
        let sandboxes: BTreeMap<&str, &str> = host
            .sandboxes
            .iter()
            .map(|s| (s.name.as_str(), s.image.as_str()))
            .collect();
        entry.insert("sandboxes", nix::value(sandboxes));
        hosts.insert(host.name.clone(), entry);
    }
    let context = IndexContext {
        stamp: STAMP,
        name: appliance.name.clone(),
        matrix_host: appliance.matrix.host.clone(),
        hosts,
    };
    tree.insert(
        "default.nix".into(),
        engine.render("index.nix.j2", &context)?.into_bytes(),
    );
    Ok(())
}
