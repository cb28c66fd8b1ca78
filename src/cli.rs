//! Command-line interface: clap types only; each subcommand lives in
//! `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Turn one declarative spec into a hardened machine running AI agents in
/// gVisor sandboxes on a private Matrix homeserver.
#[derive(Debug, Parser)]
#[command(name = "appliance", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter `appliance.toml` (refuses to overwrite one)
    Init(InitArgs),
    /// Validate the spec; exit 0 when it is sound, 2 when it is not
    Check(SpecArgs),
    /// Write every generated file next to the spec (or to `--out`)
    Generate(GenerateArgs),
    /// Show the resolved appliance: hosts, sandboxes, runtimes, rooms, bootstrap plan
    Inspect(InspectArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The spec to read
    #[arg(long, value_name = "PATH", default_value = "appliance.toml", env = "APPLIANCE_SPEC")]
    pub spec: PathBuf,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the starter spec
    #[arg(long, value_name = "PATH", default_value = "appliance.toml")]
    pub spec: PathBuf,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Output directory [default: `generated/` next to the spec]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write nothing; exit 0 when the tree on disk is exactly what the spec
    /// generates, 1 with the list of differing, missing and extra files otherwise
    #[arg(long)]
    pub check: bool,
    /// Overwrite generated files that were edited by hand
    #[arg(long, conflicts_with = "check")]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Only this host
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Output format; the JSON is documented in docs/inspect.md
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print completions for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
