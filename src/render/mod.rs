//! Model to files. Each output family has its own module; all of them are
//! pure functions of the model, so the same spec always gives the same bytes.

mod agents;
pub mod backup;
pub mod egress;
mod host;
mod images;
mod index;
pub mod nix;
mod pairing;
pub mod runtimes;
pub mod search;
pub mod synapse;
mod templates;
mod webclient;

pub use host::{DockerNetwork, NVIDIA_PACKAGE, NVPROXY_DRIVERS, RUNSC_MINIMUM, docker_network, network_create};

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::bootstrap::plan;
use crate::model::Appliance;

pub use crate::formats::{STAMP, json, yaml};

/// Relative path -> contents, sorted: the whole generated tree.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// Renders every output family of an appliance.
pub fn render(appliance: &Appliance) -> Result<Tree> {
    let mut tree = Tree::new();
    let engine = templates::Engine::new();
    index::render(appliance, &engine, &mut tree)?;
    let plan = plan::plan(appliance);
    let mut imports: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (host, file) in pairing::render(appliance, &plan, &engine, &mut tree)? {
        imports.entry(host).or_default().push(file);
    }
    if let Some(host) = appliance.hosts.get(&appliance.matrix.host) {
        webclient::render(appliance, host, &engine, &mut tree)?;
        imports
            .entry(host.name.clone())
            .or_default()
            .push(webclient::FILE.to_string());
    }
    if let Some((host, file)) = backup::render(appliance, &engine, &mut tree)? {
        imports.entry(host).or_default().push(file);
    }
    for host in appliance.hosts.values() {
        let extra = imports.get(&host.name).map_or(&[][..], Vec::as_slice);
        host::render(appliance, host, extra, &engine, &mut tree)
            .with_context(|| format!("failed to render host `{}`", host.name))?;
        runtimes::render(host, &mut tree)?;
        egress::render(host, &appliance.network, &mut tree);
    }
    synapse::render(appliance, &mut tree)?;
    agents::render(appliance, &mut tree)?;
    images::render(appliance, &engine, &mut tree)?;
    search::render(appliance, &mut tree)?;
    tree.insert("bootstrap/plan.json".into(), json(&plan)?);
    Ok(tree)
}

/// A `#` comment header: the stamp and what the file is.
pub fn hash_header(what: &str) -> String {
    format!("# {STAMP} from the appliance spec; do not edit.\n# {what}\n")
}
