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
    /// On the Matrix host: create secrets, Matrix accounts, agent tokens and rooms (idempotent)
    Bootstrap(BootstrapArgs),
    /// Check that this host can run the spec's sandboxes: runsc, its flags, platform, Docker runtimes, GPU driver
    Doctor(DoctorArgs),
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
pub struct BootstrapArgs {
    /// The plan `appliance generate` wrote (`generated/bootstrap/plan.json`)
    #[arg(long, value_name = "FILE")]
    pub plan: PathBuf,
    /// Homeserver to talk to [default: the plan's]
    #[arg(long, value_name = "URL")]
    pub homeserver: Option<String>,
    /// State directory holding every secret [default: the plan's]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Only create the secrets Synapse needs before it starts; no Matrix calls
    #[arg(long)]
    pub secrets_only: bool,
    /// Seconds to wait for the homeserver (and for a concurrent run's lock)
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The spec's host this machine is [default: the only host, or the one named like this machine]
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// The runsc binary to check
    #[arg(long, value_name = "PATH", default_value = "runsc")]
    pub runsc: PathBuf,
    /// The Docker daemon settings to compare with the generated ones
    #[arg(long, value_name = "PATH", default_value = "/etc/docker/daemon.json")]
    pub docker_config: PathBuf,
    /// Where the NVIDIA driver reports its version (tests point it elsewhere)
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/proc/driver/nvidia/version",
        hide = true
    )]
    pub nvidia_version_file: PathBuf,
    /// The KVM device (tests point it elsewhere)
    #[arg(long, value_name = "PATH", default_value = "/dev/kvm", hide = true)]
    pub kvm_device: PathBuf,
    /// The Docker CLI, to ask a running GPU sandbox which GPUs it sees
    #[arg(long, value_name = "PATH", default_value = "docker")]
    pub docker: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print completions for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
