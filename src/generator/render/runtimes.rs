//! gVisor runtimes of a host: Docker daemon settings and, for containerd
//! users, one `runsc.toml` per runtime.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;

use super::{Tree, hash_header, json};
use crate::generator::model::Host;
use crate::generator::runsc::{RunscVersion, runtime_args};

#[derive(Debug, Serialize)]
pub struct DaemonSettings {
    /// Any container not declared by the appliance still gets gVisor.
    #[serde(rename = "default-runtime")]
    pub default_runtime: String,
    #[serde(rename = "no-new-privileges")]
    pub no_new_privileges: bool,
    pub runtimes: BTreeMap<String, DockerRuntime>,
}

#[derive(Debug, Serialize)]
pub struct DockerRuntime {
    /// Looked up on dockerd's PATH; the NixOS module sets the store path.
    pub path: String,
    #[serde(rename = "runtimeArgs")]
    pub runtime_args: Vec<String>,
}

/// Docker daemon settings for a host, spelled for one runsc version.
pub fn daemon_settings(host: &Host, version: RunscVersion) -> Result<DaemonSettings> {
    let mut runtimes = BTreeMap::new();
    for profile in &host.runtimes {
        let args = runtime_args(profile, host.platform, version)
            .with_context(|| format!("runtime `{}` of host `{}`", profile.name(), host.name))?;
        runtimes.insert(
            profile.name(),
            DockerRuntime {
                path: "runsc".into(),
                runtime_args: args,
            },
        );
    }
    Ok(DaemonSettings {
        default_runtime: "runsc".into(),
        no_new_privileges: true,
        runtimes,
    })
}

#[derive(Serialize)]
struct ShimConfig {
    runsc_config: BTreeMap<String, String>,
}

pub fn render(host: &Host, tree: &mut Tree) -> Result<()> {
    let base = format!("hosts/{}", host.name);
    tree.insert(
        format!("{base}/docker-daemon.json"),
        json(&daemon_settings(host, RunscVersion::Current)?)?,
    );
    // The resolver of the host's networked sandboxes (one forwarder per
    // host, on its bridge address).
    if let Some(network) = host.sandboxes.iter().find_map(|s| s.network.as_ref()) {
        let mut text = hash_header(&format!(
            "/etc/resolv.conf of the sandboxes on host `{}`: the DNS forwarder on its bridge address.",
            host.name
        ));
        text.push_str(&format!("nameserver {}\n", network.dns));
        tree.insert(crate::generator::model::resolv_conf_path(&host.name), text.into_bytes());
    }
    for profile in &host.runtimes {
        let mut runsc_config = BTreeMap::new();
        for arg in runtime_args(profile, host.platform, RunscVersion::Current)? {
            let flag = arg.trim_start_matches("--");
            let (key, value) = flag.split_once('=').unwrap_or((flag, "true"));
            runsc_config.insert(key.to_string(), value.to_string());
        }
        let mut text = hash_header(&format!(
            "containerd shim options for the `{}` runtime of host `{}`.",
            profile.name(),
            host.name
        ));
        text.push('\n');
        text.push_str(&toml::to_string_pretty(&ShimConfig { runsc_config }).context("failed to write TOML")?);
        tree.insert(format!("{base}/runsc/{}.toml", profile.name()), text.into_bytes());
    }
    Ok(())
}
