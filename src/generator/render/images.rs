//! OCI image specs: one JSON file per image, `images/<name>.json`, with
//! what src/generator/model/image.rs decides about it (tag, account, writable paths,
//! entry point, environment, packages by name). The hand-written
//! `fromGenerated` of images/default.nix maps the names onto nixpkgs and
//! builds the image with dockerTools for the architecture of the host
//! that runs it; no Nix is written here.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::{Tree, json};
use crate::generator::model::Appliance;
use crate::generator::model::image::{self, Account, ImageLayout};
use crate::generator::spec::schema::Tool;

/// One image's parameters, as images/default.nix's `fromGenerated` reads
/// them (and images/build.nix takes them, less `image` and `purpose`;
/// the systems each image is built for are the index's, default.nix).
#[derive(Serialize)]
struct ImageArgs {
    /// Which builder of images/default.nix builds it (`images/<image>.nix`).
    image: &'static str,
    /// What the image is, for a reader of the file.
    purpose: String,
    tag: &'static str,
    account: Account,
    writable: Vec<WritableArg>,
    entrypoint: &'static [&'static str],
    env: Vec<String>,
    /// nixpkgs attribute names (with the appliance's overlay).
    packages: Vec<&'static str>,
    /// The package's bundled plugins the image keeps (`ImageLayout`'s
    /// `bundled_plugins`); read by nix/overlay.nix and
    /// scripts/rehearsal-rootfs.sh.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    bundled_plugins: &'static [&'static str],
}

/// One writable directory as images/build.nix takes it.
#[derive(Serialize)]
struct WritableArg {
    path: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
}

fn purpose(layout: &ImageLayout, browser: bool) -> String {
    if browser || layout.browser_packages.is_empty() {
        layout.purpose.to_string()
    } else {
        format!(
            "{}; built without {}: no agent running it has the browser tool",
            layout.purpose,
            layout.browser_packages.join(", ")
        )
    }
}

fn args(layout: &'static ImageLayout, browser: bool) -> ImageArgs {
    let account = layout.account;
    let writable = layout
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
    ImageArgs {
        image: layout.name,
        purpose: purpose(layout, browser),
        tag: layout.tag,
        account,
        writable,
        entrypoint: layout.entrypoint,
        env: layout.image_env(),
        packages: layout.packages_for(browser),
        bundled_plugins: layout.bundled_plugins,
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

/// The name of an image's description, `generated/images/<name>.json`: the
/// last segment of its repository. Hosts name the description by it
/// (`imageFile`), and images/default.nix builds it with `fromGenerated`.
pub fn image_file(image: &str) -> &str {
    let (repository, _) = split_reference(image);
    repository.rsplit('/').next().unwrap_or(repository)
}

pub fn render(appliance: &Appliance, tree: &mut Tree) -> Result<()> {
    // Every image any host runs, and whether an agent running it has the
    // browser tool.
    let mut images: BTreeMap<String, bool> = BTreeMap::new();
    for host in appliance.hosts.values() {
        for sandbox in &host.sandboxes {
            let browser = images.entry(sandbox.image.clone()).or_default();
            *browser |= sandbox
                .agent
                .as_ref()
                .and_then(|a| appliance.agents.get(a))
                .is_some_and(|agent| agent.tools.contains(&Tool::Browser));
        }
    }
    for (reference, browser) in images {
        let layout = image::by_reference(&reference)
            .ok_or_else(|| anyhow::anyhow!("no image layout for sandbox image {reference}"))?;
        tree.insert(format!("images/{}.json", layout.name), json(&args(layout, browser))?);
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
