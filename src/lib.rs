//! agent-appliance: one spec to a hardened, reproducible machine running AI
//! agents in gVisor sandboxes on a private Matrix homeserver.
//!
//! Data flows one way: [`spec`] (TOML) -> [`model`] (validated) ->
//! [`render`] (files) -> [`output`] (atomic writes and drift checks).

pub mod audit;
pub mod backup;
pub mod bootstrap;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod docker;
pub mod formats;
pub mod grants;
pub mod hostnames;
pub mod kinds;
pub mod lint;
pub mod model;
pub mod nixlog;
pub mod output;
pub mod pairing;
pub mod pins;
pub mod render;
pub mod runsc;
pub mod spec;
pub mod term;
pub mod upgrade;
pub mod warden;

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use crate::model::Appliance;

    /// The specs this repository ships (the root one and every example), loaded.
    pub fn shipped() -> Vec<Appliance> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut specs = vec![root.join("appliance.toml")];
        for example in ["edge-pi", "existing-host", "minimal"] {
            specs.push(root.join("examples").join(example).join("appliance.toml"));
        }
        specs.iter().map(|s| crate::commands::load(s).unwrap()).collect()
    }

    /// The bootstrap plan of the root spec, as `appliance generate` writes it.
    pub fn shipped_plan() -> crate::bootstrap::plan::Plan {
        crate::render::plan::plan(&shipped()[0])
    }
}
