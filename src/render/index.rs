//! `default.nix` at the root of the generated tree: the hosts, their
//! targets, systems and modules, for the flake to build from.

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
    hosts: BTreeMap<String, BTreeMap<&'static str, minijinja::Value>>,
}

pub fn render(appliance: &Appliance, engine: &Engine, tree: &mut Tree) -> Result<()> {
    let mut hosts = BTreeMap::new();
    for host in appliance.hosts.values() {
        let mut entry = BTreeMap::new();
        entry.insert("target", nix::value(host.target));
        entry.insert("system", nix::value(host.system));
        entry.insert("module", expr(format!("./hosts/{}", host.name)));
        hosts.insert(host.name.clone(), entry);
    }
    let context = IndexContext {
        stamp: STAMP,
        name: appliance.name.clone(),
        hosts,
    };
    tree.insert(
        "default.nix".into(),
        engine.render("index.nix.j2", &context)?.into_bytes(),
    );
    Ok(())
}
