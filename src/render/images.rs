//! OCI image specs: one Nix file per image, built with nixpkgs' dockerTools
//! for the architecture of the host that runs it.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::nix::{self, expr};
use super::templates::Engine;
use super::{STAMP, Tree};
use crate::model::Appliance;

#[derive(Serialize)]
struct ImageContext {
    stamp: &'static str,
    file: String,
    repository: String,
    tag: String,
    purpose: String,
    contents: Vec<minijinja::Value>,
    config: BTreeMap<&'static str, minijinja::Value>,
    systems: Vec<String>,
}

/// Image name -> (purpose, packages, entrypoint, user).
fn recipe(repository: &str) -> (&'static str, Vec<&'static str>, Vec<&'static str>, &'static str) {
    match repository {
        "agent-appliance/openclaw" => (
            "OpenClaw gateway with Chromium for its browser tool",
            vec!["pkgs.openclaw", "pkgs.chromium", "pkgs.cacert", "pkgs.tini"],
            vec!["tini", "-s", "--", "openclaw", "gateway", "run"],
            "1000:1000",
        ),
        "agent-appliance/picoclaw" => (
            "PicoClaw gateway with the gh CLI for its GitHub skill",
            vec!["pkgs.picoclaw", "pkgs.gh", "pkgs.cacert"],
            vec!["picoclaw", "gateway"],
            "1000:1000",
        ),
        "agent-appliance/hermes" => (
            "Hermes Agent with its browser, crawler and Docker client",
            vec!["pkgs.python3", "pkgs.chromium", "pkgs.docker-client", "pkgs.cacert"],
            vec!["hermes", "gateway", "run"],
            "10000:10000",
        ),
        _ => (
            "Docker daemon for code execution inside gVisor",
            vec!["pkgs.docker", "pkgs.iptables", "pkgs.cacert"],
            vec!["dockerd"],
            "0:0",
        ),
    }
}

pub fn render(appliance: &Appliance, engine: &Engine, tree: &mut Tree) -> Result<()> {
    // Every image any host runs, with the systems it is needed for.
    let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for host in appliance.hosts.values() {
        for sandbox in &host.sandboxes {
            let systems = images.entry(sandbox.image.clone()).or_default();
            let system = serde_json::to_value(host.system)?
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !systems.contains(&system) {
                systems.push(system);
                systems.sort();
            }
        }
    }
    for (image, systems) in images {
        let (repository, tag) = image.rsplit_once(':').unwrap_or((&image, "latest"));
        let file = repository.rsplit('/').next().unwrap_or(repository).to_string();
        let (purpose, packages, entrypoint, user) = recipe(repository);
        let mut config = BTreeMap::new();
        config.insert("Entrypoint", nix::value(&entrypoint));
        config.insert("User", minijinja::Value::from(user));
        config.insert("Env", nix::value(["SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"]));
        let context = ImageContext {
            stamp: STAMP,
            file: file.clone(),
            repository: repository.to_string(),
            tag: tag.to_string(),
            purpose: purpose.to_string(),
            contents: packages.into_iter().map(expr).collect(),
            config,
            systems,
        };
        tree.insert(
            format!("images/{file}.nix"),
            engine.render("image.nix.j2", &context)?.into_bytes(),
        );
    }
    Ok(())
}
