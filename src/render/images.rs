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

/// How one image is built: packages from nixpkgs or from the flake's
/// overlay (nix/overlay.nix, upstream releases pinned in nix/sources.json).
struct Recipe {
    purpose: &'static str,
    packages: Vec<&'static str>,
    entrypoint: Vec<&'static str>,
    user: &'static str,
    env: Vec<&'static str>,
    version_check: Option<(&'static str, &'static str)>,
}

const CA_BUNDLE: &str = "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt";

fn recipe(repository: &str) -> Recipe {
    match repository {
        "agent-appliance/openclaw" => Recipe {
            purpose: "OpenClaw gateway with its Matrix plugin and Chromium (`/bin/chromium`) for its browser tool; nothing is installed at runtime",
            packages: vec!["pkgs.appliance-openclaw", "pkgs.chromium", "pkgs.cacert", "pkgs.tini"],
            entrypoint: vec!["tini", "-s", "--", "openclaw", "gateway", "run"],
            user: "1000:1000",
            env: vec![CA_BUNDLE],
            version_check: Some(("pkgs.appliance-openclaw", "exact")),
        },
        "agent-appliance/picoclaw" => Recipe {
            purpose: "PicoClaw gateway (pure Go, static) with the gh CLI for its GitHub skill",
            // A shell and core tools: PicoClaw's exec tool (and the gh
            // skill through it) runs commands with `sh -c`.
            packages: vec![
                "pkgs.appliance-picoclaw",
                "pkgs.gh",
                "pkgs.bashInteractive",
                "pkgs.coreutils",
                "pkgs.cacert",
            ],
            entrypoint: vec!["picoclaw", "gateway"],
            user: "1000:1000",
            env: vec![CA_BUNDLE],
            version_check: Some(("pkgs.appliance-picoclaw", "exact")),
        },
        "agent-appliance/hermes" => Recipe {
            purpose: "Hermes Agent from PyPI with Chromium and agent-browser for its browser, the firecrawl client for its crawler and the Docker CLI for code execution",
            packages: vec![
                "pkgs.appliance-hermes",
                "pkgs.chromium",
                "pkgs.docker-client",
                "pkgs.cacert",
                "pkgs.tini",
            ],
            entrypoint: vec!["tini", "-s", "--", "hermes", "gateway", "run"],
            user: "10000:10000",
            env: vec![CA_BUNDLE, "AGENT_BROWSER_EXECUTABLE_PATH=/bin/chromium"],
            version_check: Some(("pkgs.appliance-hermes", "exact")),
        },
        _ => Recipe {
            purpose: "Docker 29 daemon for code execution inside gVisor, with the code-runner image it loads at start; its /var/lib/docker is a tmpfs the sandbox mounts",
            packages: vec![
                "pkgs.docker_29",
                "pkgs.appliance-dind-start",
                "pkgs.cacert",
                "pkgs.tini",
            ],
            // The sandbox's command is `appliance-dind-start` with dockerd's flags.
            entrypoint: vec!["tini", "-s", "--"],
            user: "0:0",
            env: vec![CA_BUNDLE],
            version_check: Some(("pkgs.docker_29", "major")),
        },
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
        let (repository, tag) = split_reference(&image);
        let file = image_file(&image).to_string();
        let recipe = recipe(repository);
        let mut config = BTreeMap::new();
        config.insert("Entrypoint", nix::value(&recipe.entrypoint));
        config.insert("User", minijinja::Value::from(recipe.user));
        config.insert("Env", nix::value(&recipe.env));
        let label_package = recipe.version_check.map_or(recipe.packages[0], |(package, _)| package);
        config.insert(
            "Labels",
            minijinja::Value::from(BTreeMap::from([(
                "org.opencontainers.image.version",
                expr(format!("{label_package}.version")),
            )])),
        );
        let context = ImageContext {
            stamp: STAMP,
            file: file.clone(),
            repository: repository.to_string(),
            tag: tag.to_string(),
            purpose: recipe.purpose.to_string(),
            contents: recipe.packages.into_iter().map(expr).collect(),
            config,
            systems,
            version_check: recipe.version_check.map(|(package, kind)| VersionCheck {
                package: expr(package),
                kind,
            }),
        };
        tree.insert(
            format!("images/{file}.nix"),
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
