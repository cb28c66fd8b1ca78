//! `appliance.json` at the root of the generated tree: the hosts, their
//! targets, systems, option files and sandbox images, and which host runs
//! Matrix, for the flake to build from (configurations, images, VM test)
//! through the loader, nix/generated.nix.
//! For the VM test's scenario, each host also lists its agents (kind,
//! model, whether they run code in a code sandbox or have a browser) and,
//! on the inference host,
//! Ollama's sandbox, address and models.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use super::host::options_path;
use super::images::image_file;
use super::values::{GeneratedFile, value};
use super::{Tree, json, json_about};
use crate::generator::model::{Appliance, Host};
use crate::generator::spec::schema::Tool;

/// The index (it names the hosts' option files and the image descriptions
/// as generated files).
#[derive(Serialize)]
struct Index {
    about: String,
    name: String,
    #[serde(rename = "matrixHost")]
    matrix_host: String,
    hosts: BTreeMap<String, BTreeMap<&'static str, Value>>,
    /// Every image a host runs: its file and the systems it is built for.
    images: BTreeMap<String, BTreeMap<&'static str, Value>>,
}

/// What the VM test's scenario needs to know of an agent on its host.
#[derive(Serialize)]
struct AgentEntry<'a> {
    kind: String,
    model: Option<&'a str>,
    /// It runs code in its own code sandbox (the scenario's `code` step).
    code: bool,
    /// It has the `browser` tool (the scenario's `browse` step).
    browser: bool,
}

fn host_agents<'a>(appliance: &'a Appliance, host: &Host) -> BTreeMap<&'a str, AgentEntry<'a>> {
    appliance
        .agents
        .values()
        .filter(|agent| agent.host == host.name)
        .map(|agent| {
            let entry = AgentEntry {
                kind: agent.kind.to_string(),
                model: agent.model.as_deref(),
                code: agent.code_execution.is_some(),
                browser: agent.tools.contains(&Tool::Browser),
            };
            (agent.name.as_str(), entry)
        })
        .collect()
}

/// Ollama on this host: the sandbox it runs in (none when it runs on the
/// host itself), where the host reaches it, and the models it serves.
#[derive(Serialize)]
struct InferenceEntry<'a> {
    sandbox: Option<&'a str>,
    url: String,
    models: &'a [String],
}

fn host_inference<'a>(appliance: &'a Appliance, host: &Host) -> Option<InferenceEntry<'a>> {
    let inference = appliance.inference.as_ref().filter(|_| host.runs_inference)?;
    Some(InferenceEntry {
        sandbox: inference.sandbox.as_deref(),
        url: format!("http://{}:{}", inference.bind_address, inference.port),
        models: &inference.models,
    })
}

/// The CUDA capability of the host's GPU from the GPU catalog
/// (`model::vram::GPU_CATALOG`): nixpkgs then builds CUDA device code only
/// for it (`nixpkgs.config.cudaCapabilities`, pkgs/top-level/config.nix)
/// instead of for every architecture, which a CI runner cannot compile.
/// `None` (no GPU, or a model without one there): nixpkgs' default set.
fn cuda_capability(host: &Host) -> Option<&'static str> {
    crate::generator::model::vram::gpu_model(&host.gpu.as_ref()?.model)?.cuda_capability
}

pub fn render(appliance: &Appliance, tree: &mut Tree) -> Result<()> {
    let mut hosts = BTreeMap::new();
    let mut image_systems: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for host in appliance.hosts.values() {
        for sandbox in &host.sandboxes {
            let systems = image_systems.entry(image_file(&sandbox.image)).or_default();
            let system = value(host.system);
            if !systems.contains(&system) {
                systems.push(system);
            }
        }
        let mut entry = BTreeMap::new();
        entry.insert("target", value(host.target));
        entry.insert("system", value(host.system));
        entry.insert("options", value(GeneratedFile::new(options_path(&host.name))));
        let sandboxes: BTreeMap<&str, &str> = host
            .sandboxes
            .iter()
            .map(|s| (s.name.as_str(), s.image.as_str()))
            .collect();
        entry.insert("sandboxes", value(sandboxes));
        entry.insert("agents", value(host_agents(appliance, host)));
        if let Some(capability) = cuda_capability(host) {
            entry.insert("cudaCapabilities", value([capability]));
        }
        if let Some(inference) = host_inference(appliance, host) {
            entry.insert("inference", value(inference));
        }
        hosts.insert(host.name.clone(), entry);
    }
    let images = image_systems
        .into_iter()
        .map(|(name, mut systems)| {
            systems.sort_by_key(|s| s.to_string());
            let entry = BTreeMap::from([
                ("file", value(GeneratedFile::new(format!("images/{name}.json")))),
                ("systems", Value::from(systems)),
            ]);
            (name.to_string(), entry)
        })
        .collect();
    let index = Index {
        about: json_about(&format!(
            "Every host of appliance `{}` with its target, options and sandbox images, and every image \
             with the systems it runs on; the flake builds its nixosConfigurations, images and VM test \
             from this, loaded by nix/generated.nix.",
            appliance.name
        )),
        name: appliance.name.clone(),
        matrix_host: appliance.matrix.host.clone(),
        hosts,
        images,
    };
    // Through a JSON value, so every key is sorted.
    tree.insert(INDEX.into(), json(&serde_json::to_value(&index)?)?);
    Ok(())
}

/// The index's path in the generated tree.
pub const INDEX: &str = "appliance.json";
