use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};

use anyhow::{Context, Result, bail};

use crate::operator::cli::InitArgs;

/// A one-agent appliance on an existing NixOS host: small enough to read,
/// valid as written.
pub const STARTER: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/minimal/appliance.toml"));

pub fn run(args: &InitArgs) -> Result<()> {
    // `--spec a/b/appliance.toml` in a new project: make its directory.
    if let Some(dir) = args.spec.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create `{}`", dir.display()))?;
    }
    // `create_new` refuses to overwrite, without a check-then-write race.
    let mut file = match OpenOptions::new().write(true).create_new(true).open(&args.spec) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => bail!(
            "`{}` exists already\nhint: `appliance init` never overwrites a spec; pass `--spec PATH` to write a new one elsewhere",
            args.spec.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("failed to create `{}`", args.spec.display())),
    };
    file.write_all(STARTER.as_bytes())
        .with_context(|| format!("failed to write `{}`", args.spec.display()))?;
    crate::common::term::println(&format!(
        "wrote {}; next: `appliance check` and `appliance generate`",
        args.spec.display()
    ))
}
