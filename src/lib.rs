//! agent-appliance: one spec to a hardened, reproducible machine running AI
//! agents in gVisor sandboxes on a private Matrix homeserver.
//!
//! The folders say where code runs: [`generator`] on the operator's machine
//! (spec (TOML) -> model (validated) -> render (files) -> output), [`on_host`]
//! on the appliance's hosts, [`operator`] the command line over both;
//! [`schema`] is the files the generator writes and the hosts read, and
//! [`common`] what all of them use. docs/architecture.md has the table of
//! what each may import, which tests/layers.rs enforces.

pub mod common;
pub mod generator;
pub mod on_host;
pub mod operator;
pub mod schema;

/// What the unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use crate::generator::model::Appliance;

    /// The root spec, loaded.
    pub fn default_spec() -> Appliance {
        crate::operator::commands::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("appliance.toml")).unwrap()
    }

    /// The specs this repository ships (the root one and every example), loaded.
    pub fn shipped() -> Vec<Appliance> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut specs = vec![root.join("appliance.toml")];
        for example in ["edge-pi", "existing-host", "minimal"] {
            specs.push(root.join("examples").join(example).join("appliance.toml"));
        }
        specs
            .iter()
            .map(|s| crate::operator::commands::load(s).unwrap())
            .collect()
    }

    /// `check` of each host of the shipped specs, with its appliance.
    pub fn each_shipped_host(mut check: impl FnMut(&Appliance, &crate::generator::model::Host)) {
        for appliance in shipped() {
            for host in appliance.hosts.values() {
                check(&appliance, host);
            }
        }
    }

    /// The bootstrap plan of the root spec, as `appliance generate` writes it.
    pub fn shipped_plan() -> crate::schema::plan::Plan {
        crate::generator::render::plan::plan(&shipped()[0])
    }
}
