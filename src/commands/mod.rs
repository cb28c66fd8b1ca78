//! One file per subcommand, each with `pub fn run(args) -> Result<()>`.

pub mod bootstrap;
pub mod build;
pub mod check;
pub mod completions;
pub mod doctor;
pub mod flash;
pub mod gce;
pub mod generate;
pub mod init;
pub mod inspect;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, anyhow};

use crate::model::{self, Appliance};
use crate::spec;

/// Reads, parses and validates a spec.
pub fn load(path: &Path) -> Result<Appliance> {
    let bytes = fs::read(path).with_context(|| {
        format!(
            "failed to read spec `{}`\nhint: run `appliance init` to write one, or pass `--spec PATH`",
            path.display()
        )
    })?;
    let source = spec::decode(path.display().to_string(), bytes)?;
    let spec = spec::parse(&source)?;
    Ok(model::build(&source, &spec)?)
}

/// A count with its noun: `1 host`, `2 hosts`, `0 sandboxes`.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// The spec's host names, each in backticks: `` `hub`, `pi` ``.
pub fn host_names(appliance: &Appliance) -> String {
    appliance
        .hosts
        .keys()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error for `--host NAME` when the spec has no such host.
pub fn unknown_host(appliance: &Appliance, name: &str) -> anyhow::Error {
    anyhow!(
        "no host `{name}` in the spec\nhint: hosts are: {}",
        host_names(appliance)
    )
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_are_plural_unless_one() {
        assert_eq!(count(0, "sandbox", "sandboxes"), "0 sandboxes");
        assert_eq!(count(1, "sandbox", "sandboxes"), "1 sandbox");
        assert_eq!(count(2, "host", "hosts"), "2 hosts");
    }
}
