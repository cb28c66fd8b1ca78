use std::fs::OpenOptions;
use std::io::Write;

use anyhow::{Context, Result};

use crate::cli::InitArgs;

/// A one-agent appliance on an existing NixOS host: small enough to read,
/// valid as written.
pub const STARTER: &str = include_str!("../../examples/minimal/appliance.toml");

pub fn run(args: &InitArgs) -> Result<()> {
    // `create_new` refuses to overwrite, without a check-then-write race.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&args.spec)
        .with_context(|| {
            format!(
                "failed to create `{}`\nhint: it may exist already; appliance init never overwrites a spec",
                args.spec.display()
            )
        })?;
    file.write_all(STARTER.as_bytes())
        .with_context(|| format!("failed to write `{}`", args.spec.display()))?;
    println!(
        "wrote {}; next: `appliance check` and `appliance generate`",
        args.spec.display()
    );
    Ok(())
}
