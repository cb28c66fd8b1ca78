use anyhow::Result;

use crate::cli::SpecArgs;

pub fn run(args: &SpecArgs) -> Result<()> {
    let appliance = super::load(&args.spec)?;
    let sandboxes: usize = appliance.hosts.values().map(|h| h.sandboxes.len()).sum();
    println!(
        "{}: appliance `{}` is valid: {} host(s), {} agent(s), {} sandbox(es), {} room(s)",
        args.spec.display(),
        appliance.name,
        appliance.hosts.len(),
        appliance.agents.len(),
        sandboxes,
        appliance.rooms.len()
    );
    // Not errors: the spec is valid, but something it asks for is off.
    for agent in appliance.agents.values() {
        for warning in &agent.warnings {
            eprintln!("warning[{}]: {}", warning.code, warning.message);
        }
    }
    Ok(())
}
