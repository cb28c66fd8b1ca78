//! One file per subcommand, each with `pub fn run(args) -> Result<()>`.

pub mod admin;
pub mod audit;
pub mod backup;
pub mod bootstrap;
pub mod build;
pub mod check;
pub mod completions;
pub mod doctor;
pub mod explain;
pub mod flash;
pub mod gce;
pub mod generate;
pub mod init;
pub mod inspect;
pub mod pair;
pub mod upgrade;
pub mod warden;

use std::path::Path;

use anyhow::{Result, anyhow};

use crate::generator::lint::{self, Finding};
use crate::generator::model::{self, Appliance};
use crate::generator::spec;

/// Reads, parses and validates a spec.
pub fn load(path: &Path) -> Result<Appliance> {
    Ok(load_linted(path)?.0)
}

/// Like [`load`], with the security lints' findings.
pub fn load_linted(path: &Path) -> Result<(Appliance, Vec<Finding>)> {
    let source = spec::read(path)?;
    let spec = spec::parse(&source)?;
    let appliance = model::build(&source, &spec)?;
    let findings = lint::run(&appliance, &source.text);
    Ok((appliance, findings))
}

/// Prints every finding to stderr; an error when a deny lint is not allowed.
pub fn report_lints(spec: &Path, findings: &[Finding]) -> Result<()> {
    for finding in findings {
        crate::common::term::eprintln(&lint::describe(finding));
    }
    let blocking = findings.iter().filter(|f| f.blocks()).count();
    if blocking > 0 {
        return Err(lint::LintsDenied {
            spec: spec.display().to_string(),
            count: blocking,
        }
        .into());
    }
    Ok(())
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
