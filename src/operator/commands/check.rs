use anyhow::Result;

use super::count;
use crate::common::term::inert;
use crate::operator::cli::SpecArgs;

pub fn run(args: &SpecArgs) -> Result<()> {
    let (appliance, findings) = super::load_linted(&args.spec)?;
    let sandboxes: usize = appliance.hosts.values().map(|h| h.sandboxes.len()).sum();
    // The verdict is the exit code (lints below may still deny): a reader
    // that stops early must not turn it into 0.
    crate::common::term::unless_closed(crate::common::term::println(&format!(
        "{}: appliance `{}` is valid: {}, {}, {}, {}",
        args.spec.display(),
        appliance.name,
        count(appliance.hosts.len(), "host", "hosts"),
        count(appliance.agents.len(), "agent", "agents"),
        count(sandboxes, "sandbox", "sandboxes"),
        count(appliance.rooms.len(), "room", "rooms")
    )))?;
    // Not errors: the spec is valid, but something it asks for is off.
    for warning in appliance.inference.iter().flat_map(|i| &i.warnings) {
        crate::common::term::eprintln(&format!("warning[{}]: {}", warning.code, inert(&warning.message)));
    }
    for agent in appliance.agents.values() {
        for warning in &agent.warnings {
            crate::common::term::eprintln(&format!("warning[{}]: {}", warning.code, inert(&warning.message)));
        }
    }
    super::report_lints(&args.spec, &findings)
}
