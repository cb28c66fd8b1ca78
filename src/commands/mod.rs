//! One file per subcommand, each with `pub fn run(args) -> Result<()>`.

pub mod bootstrap;
pub mod check;
pub mod completions;
pub mod generate;
pub mod init;
pub mod inspect;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::diag::SourceFile;
use crate::model::{self, Appliance};
use crate::spec;

/// Reads, parses and validates a spec.
pub fn load(path: &Path) -> Result<Appliance> {
    let text = fs::read_to_string(path).with_context(|| {
        format!(
            "failed to read spec `{}`\nhint: run `appliance init` to write one, or pass `--spec PATH`",
            path.display()
        )
    })?;
    let source = SourceFile {
        name: path.display().to_string(),
        text,
    };
    let spec = spec::parse(&source)?;
    Ok(model::build(&source, &spec)?)
}
