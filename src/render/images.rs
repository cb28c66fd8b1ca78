//! OCI image specs: one Nix file per image, built with nixpkgs' dockerTools
//! for the architecture of the host that runs it.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::nix::{self, expr};
use super::templates::Engine;
use super::{STAMP, Tree};
use crate::model::Appliance;
use crate::model::image::{self, VersionCheck as Check};

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
    /// The package whose upstream version the tag names, and how the tag
    /// relates to it; checked when the image is evaluated.
    version_check: Option<VersionCheck>,
}

#[derive(Serialize)]
struct VersionCheck {
    package: minijinja::Value,
    /// `exact`: the tag is the version; `major`: the tag is its major.
    kind: &'static str,
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
    for (reference, systems) in images {
        let layout = image::by_reference(&reference)
            .ok_or_else(|| anyhow::anyhow!("no image layout for sandbox image {reference}"))?;
        let package = |attribute: &str| expr(format!("pkgs.{attribute}"));
        let mut config = BTreeMap::new();
        config.insert("Entrypoint", nix::value(layout.entrypoint));
        config.insert("User", minijinja::Value::from(layout.account.user()));
        config.insert("Env", nix::value(layout.env));
        config.insert(
            "Labels",
            minijinja::Value::from(BTreeMap::from([(
                "org.opencontainers.image.version",
                expr(format!("pkgs.{}.version", layout.version_check.package())),
            )])),
        );
        let context = ImageContext {
            stamp: STAMP,
            file: layout.name.to_string(),
            repository: layout.repository.to_string(),
            tag: layout.tag.to_string(),
            purpose: layout.purpose.to_string(),
            contents: layout.packages.iter().map(|p| package(p)).collect(),
            config,
            systems,
            version_check: Some(VersionCheck {
                package: package(layout.version_check.package()),
                kind: match layout.version_check {
                    Check::Exact { .. } => "exact",
                    Check::Major { .. } => "major",
                },
            }),
        };
        tree.insert(
            format!("images/{}.nix", layout.name),
            engine.render("image.nix.j2", &context)?.into_bytes(),
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
