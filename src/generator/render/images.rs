//! OCI image specs: one Nix file per image, built with nixpkgs' dockerTools
//! for the architecture of the host that runs it.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::nix::{self, expr};
use super::templates::Engine;
use super::{STAMP, Tree};
use crate::generator::model::Appliance;
use crate::generator::model::image::{self, ImageLayout};
use crate::generator::spec::schema::Tool;

#[derive(Serialize)]
struct ImageContext {
    stamp: &'static str,
    file: &'static str,
    tag: &'static str,
    purpose: String,
    account: minijinja::Value,
    writable: minijinja::Value,
    entrypoint: minijinja::Value,
    env: minijinja::Value,
    contents: Vec<minijinja::Value>,
    systems: Vec<String>,
}

/// One writable directory as images/build.nix takes it.
#[derive(Serialize)]
struct WritableArg {
    path: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
}

fn context(layout: &'static ImageLayout, systems: Vec<String>, browser: bool) -> ImageContext {
    let account = layout.account;
    let writable: Vec<WritableArg> = layout
        .writable
        .iter()
        .map(|w| {
            let (uid, gid) = w.owner_ids(&account);
            WritableArg {
                path: w.path,
                mode: w.mode_octal(),
                uid,
                gid,
            }
        })
        .collect();
    ImageContext {
        stamp: STAMP,
        file: layout.name,
        tag: layout.tag,
        purpose: if browser || layout.browser_packages.is_empty() {
            layout.purpose.to_string()
        } else {
            format!(
                "{}; built without {}: no agent running it has the browser tool",
                layout.purpose,
                layout.browser_packages.join(", ")
            )
        },
        account: nix::value(BTreeMap::from([
            ("name", minijinja::Value::from(account.name)),
            ("uid", minijinja::Value::from(account.uid)),
            ("gid", minijinja::Value::from(account.gid)),
            ("home", minijinja::Value::from(account.home)),
        ])),
        writable: nix::value(writable),
        entrypoint: nix::value(layout.entrypoint),
        env: nix::value(layout.image_env()),
        contents: layout
            .packages_for(browser)
            .iter()
            .map(|p| expr(format!("pkgs.{p}")))
            .collect(),
        systems,
    }
}

/// An image reference's repository and tag (`latest` when it has none). A
/// colon before the last `/` is a registry's port, not a tag.
pub fn split_reference(image: &str) -> (&str, &str) {
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => (&image[..name_start + colon], &image[name_start + colon + 1..]),
        None => (image, "latest"),
    }
}

/// The name of an image's recipe, `images/<name>.nix`: the last segment of
/// its repository. Hosts import the recipe by this name.
pub fn image_file(image: &str) -> &str {
    let (repository, _) = split_reference(image);
    repository.rsplit('/').next().unwrap_or(repository)
}

pub fn render(appliance: &Appliance, engine: &Engine, tree: &mut Tree) -> Result<()> {
    // Every image any host runs, with the systems it is needed for and
    // whether an agent running it has the browser tool.
    let mut images: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    for host in appliance.hosts.values() {
        for sandbox in &host.sandboxes {
            let (systems, browser) = images.entry(sandbox.image.clone()).or_default();
            let system = serde_json::to_value(host.system)?
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !systems.contains(&system) {
                systems.push(system);
                systems.sort();
            }
            *browser |= sandbox
                .agent
                .as_ref()
                .and_then(|a| appliance.agents.get(a))
                .is_some_and(|agent| agent.tools.contains(&Tool::Browser));
        }
    }
    for (reference, (systems, browser)) in images {
        let layout = image::by_reference(&reference)
            .ok_or_else(|| anyhow::anyhow!("no image layout for sandbox image {reference}"))?;
        tree.insert(
            format!("images/{}.nix", layout.name),
            engine
                .render("image.nix.j2", context(layout, systems, browser))?
                .into_bytes(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{image_file, split_reference};

    #[test]
    fn references_split_at_the_tag_not_the_registry_port() {
        assert_eq!(
            split_reference("appliance/openclaw:2026.5"),
            ("appliance/openclaw", "2026.5")
        );
        assert_eq!(split_reference("openclaw"), ("openclaw", "latest"));
        assert_eq!(
            split_reference("registry:5000/appliance/openclaw"),
            ("registry:5000/appliance/openclaw", "latest")
        );
        assert_eq!(
            split_reference("registry:5000/appliance/openclaw:1"),
            ("registry:5000/appliance/openclaw", "1")
        );
        assert_eq!(image_file("registry:5000/appliance/openclaw:1"), "openclaw");
        assert_eq!(image_file("hermes"), "hermes");
    }
}
