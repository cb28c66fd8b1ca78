//! Model to files. Each output family has its own module; all of them are
//! pure functions of the model, so the same spec always gives the same bytes.

mod agents;
pub mod backup;
pub mod egress;
mod host;
mod images;
mod index;
mod pairing;
pub mod plan;
pub mod runtimes;
pub mod search;
pub mod synapse;
mod values;
mod webclient;

pub use host::{DockerNetwork, NVIDIA_PACKAGE, NVPROXY_DRIVERS, RUNSC_MINIMUM, docker_network, network_create};

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::generator::model::Appliance;

pub use crate::generator::formats::{STAMP, json, yaml};

/// Relative path -> contents, sorted: the whole generated tree.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// Renders every output family of an appliance.
pub fn render(appliance: &Appliance) -> Result<Tree> {
    let mut tree = Tree::new();
    index::render(appliance, &mut tree)?;
    let plan = plan::plan(appliance);
    // Option values beside each host's own: pairing's, and the web client
    // of the Matrix host.
    let mut extra: BTreeMap<String, Vec<values::Setting>> = BTreeMap::new();
    for (host, setting) in pairing::render(appliance, &plan, &mut tree)? {
        extra.entry(host).or_default().push(setting);
    }
    if let Some(host) = appliance.hosts.get(&appliance.matrix.host) {
        extra
            .entry(host.name.clone())
            .or_default()
            .push(webclient::setting(appliance, host));
    }
    if let Some((host, setting)) = backup::render(appliance, &mut tree)? {
        extra.entry(host).or_default().push(setting);
    }
    for host in appliance.hosts.values() {
        host::render(appliance, host, extra.remove(&host.name).unwrap_or_default(), &mut tree)
            .with_context(|| format!("failed to render host `{}`", host.name))?;
        runtimes::render(host, &mut tree)?;
        egress::render(host, &appliance.network, &mut tree);
    }
    synapse::render(appliance, &mut tree)?;
    agents::render(appliance, &mut tree)?;
    images::render(appliance, &mut tree)?;
    search::render(appliance, &mut tree)?;
    tree.insert("bootstrap/plan.json".into(), json(&plan)?);
    Ok(tree)
}

/// A `#` comment header: the stamp and what the file is.
pub fn hash_header(what: &str) -> String {
    format!("# {STAMP} from the appliance spec; do not edit.\n# {what}\n")
}

/// A JSON file's `about`: the stamp, how an edit is caught, and `what` the
/// file is (JSON has no comments).
pub fn json_about(what: &str) -> String {
    format!(
        "{STAMP} from the appliance spec; do not edit (SHA256SUMS and `appliance generate --check` \
         catch an edit). {what}"
    )
}
