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
    /// Per sandbox: runtime, user, capabilities, mounts, sockets, network reach, egress, secrets, GPU, lints
    Explain(ExplainArgs),
    /// On the Matrix host: create secrets, Matrix accounts, agent tokens and rooms (idempotent)
    Bootstrap(BootstrapArgs),
    /// Check that this host can run the spec's sandboxes: runsc, its flags, platform, Docker runtimes, GPU driver
    Doctor(DoctorArgs),
    /// Build a host's image or system with Nix, showing progress
    Build(BuildArgs),
    /// Write an image (`.img` or `.img.zst`) to an SD card or disk, then read it back and verify it
    Flash(FlashArgs),
    /// Print (or run) the gcloud steps that put the GCE host's image on a GPU VM
    Gce(GceArgs),
    /// On a remote host: fetch this host's agents' Matrix credentials from the hub over the overlay
    Pair(PairArgs),
    /// On the Matrix host: hand each remote host its agents' credentials over the overlay
    PairServe(PairServeArgs),
    /// On the Matrix host: watch the agents' rooms, obey the admins' `!halt`/`!resume`/`!status`, break agent loops
    Warden(WardenArgs),
    /// Check or read the warden's hash-chained audit trail
    #[command(subcommand)]
    Audit(AuditCommand),
    /// On the Matrix host, as root: the human admins' accounts
    #[command(subcommand)]
    Admin(AdminCommand),
    /// On the Matrix host, as root: back up everything stateful with restic (docs/backup.md)
    #[command(subcommand)]
    Backup(BackupCommand),
    /// On the Matrix host, as root, before the agents and Synapse start: put a backup's state back
    Restore(RestoreArgs),
    /// On the Matrix host, as root: snapshot the state, switch the system, gate on health; on failure roll both back (docs/upgrade.md)
    Upgrade(UpgradeArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct PairArgs {
    /// This host's pairing config (`generated/hosts/<host>/pairing.json`)
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The hub's pairing server [default: the config's, on the hub's overlay address]
    #[arg(long, value_name = "ADDR:PORT")]
    pub hub: Option<std::net::SocketAddrV4>,
    /// State directory the agents' secrets go to [default: the config's]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// This host's WireGuard private key [default: the config's]
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
    /// Seconds to keep asking the hub before giving up
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct PairServeArgs {
    /// The hub's pairing config (`generated/hosts/<hub>/pairing-server.json`)
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Where to listen [default: the config's: the hub's overlay address]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddrV4>,
    /// State directory holding the agents' secrets [default: the config's]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The hub's WireGuard private key [default: the config's]
    #[arg(long, value_name = "FILE")]
    pub private_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WardenArgs {
    /// The bootstrap plan [default: the one modules/bootstrap.nix installs]
    #[arg(long, value_name = "FILE", default_value = "/etc/appliance/bootstrap-plan.json")]
    pub plan: PathBuf,
    /// Homeserver to talk to [default: the plan's]
    #[arg(long, value_name = "URL")]
    pub homeserver: Option<String>,
    /// State directory holding the appliance account's token [default: the plan's]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The audit trail to append to [default: `warden/audit.jsonl` in the state directory]
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// Handle what is new since the last run, then exit (no long poll)
    #[arg(long)]
    pub once: bool,
    /// Post the audit trail's head to the ops room at most this often, in seconds (when it moved; at once on start)
    #[arg(long, value_name = "SECS", default_value_t = crate::on_host::warden::HEAD_EVERY_SECS)]
    pub head_every: u64,
    /// The docker CLI that reports the sandboxes' health (`DOCKER_HOST` is honoured)
    #[arg(long, value_name = "PROGRAM", default_value = "docker")]
    pub docker: String,
    /// The egress proxy's access log [default: the plan's, when the host runs the proxy]
    #[arg(long, value_name = "FILE")]
    pub proxy_log: Option<PathBuf>,
    /// Who stops and starts a sandbox for `!halt --stop`: systemd (its `docker-<name>.service`) or docker
    #[arg(long, value_enum, default_value_t = crate::on_host::warden::control::SandboxControl::Systemd)]
    pub sandbox_control: crate::on_host::warden::control::SandboxControl,
    /// Tell the ops room about a sandbox that has not been running for this many seconds
    #[arg(long, value_name = "SECS", default_value_t = crate::on_host::warden::UNREADY_AFTER_SECS)]
    pub unready_after: u64,
    /// The directory of the egress grant files, each named as its sandbox [default: the plan's paths]
    #[arg(long, value_name = "DIR")]
    pub grants_dir: Option<PathBuf>,
    /// What makes the egress proxy read the grant files again: a program and its arguments, split on spaces
    #[arg(long, value_name = "COMMAND", default_value = crate::on_host::warden::grants::DEFAULT_PROXY_RELOAD)]
    pub proxy_reload: String,
    /// Refuse a code execution request no admin approved within this many seconds
    #[arg(long, value_name = "SECS", default_value_t = crate::on_host::warden::approvals::APPROVAL_TIMEOUT_SECS)]
    pub approval_timeout: u64,
    /// Serve the approval brokers' sockets here, each as `<code sandbox>/docker.sock` [default: the plan's paths]
    #[arg(long, value_name = "DIR")]
    pub approval_sockets: Option<PathBuf>,
    /// The code sandboxes' own Docker sockets are here, each as `<code sandbox>/docker.sock` [default: the plan's paths]
    #[arg(long, value_name = "DIR")]
    pub code_sockets: Option<PathBuf>,
    /// The last backup run's result, which the ops room hears of when it failed (docs/backup.md) [default: none]
    #[arg(long, value_name = "FILE")]
    pub backup_status: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every link of the chain; exit 0 with the head, or 1 naming the first bad line
    Verify(AuditFileArgs),
    /// Print the last records, control characters escaped
    Tail(AuditTailArgs),
}

#[derive(Debug, Args)]
pub struct AuditFileArgs {
    /// The audit trail [default: /var/lib/appliance/warden/audit.jsonl]
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditTailArgs {
    /// How many records
    #[arg(short = 'n', value_name = "N", default_value_t = 20)]
    pub lines: usize,
    #[command(flatten)]
    pub file: AuditFileArgs,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print an admin's initial Matrix password (derived from the bootstrap's master key; root only)
    Password(AdminPasswordArgs),
}

#[derive(Debug, Args)]
pub struct AdminPasswordArgs {
    /// The admin, as in the spec's `[matrix] admins` (`gendo`) or as a user id (`@gendo:magi`)
    pub admin: String,
    /// The bootstrap plan [default: the one modules/bootstrap.nix installs]
    #[arg(long, value_name = "FILE", default_value = "/etc/appliance/bootstrap-plan.json")]
    pub plan: PathBuf,
    /// State directory holding the master key [default: the plan's]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up now: start the restic unit, wait, report its result
    Now(BackupConfigArgs),
    /// List the repository's snapshots
    List(BackupResticArgs),
    /// Check the repository's integrity (`restic check`)
    Check(BackupCheckArgs),
    /// The restic unit's first step: gather the state into the staging directory
    Prepare(BackupConfigArgs),
    /// The restic unit's last step (run whatever happened): remove the staging directory, record the result
    Cleanup(BackupConfigArgs),
}

#[derive(Debug, Args)]
pub struct BackupConfigArgs {
    /// The backup config `appliance generate` wrote (`generated/hosts/<host>/backup.json`)
    #[arg(long, value_name = "FILE", default_value = crate::schema::backup::CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct BackupResticArgs {
    #[command(flatten)]
    pub config: BackupConfigArgs,
    /// The restic program
    #[arg(long, value_name = "PROGRAM", default_value = "restic")]
    pub restic: String,
}

#[derive(Debug, Args)]
pub struct BackupCheckArgs {
    #[command(flatten)]
    pub restic: BackupResticArgs,
    /// Also read every pack back and verify its contents (slow: downloads the whole repository)
    #[arg(long)]
    pub read_data: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot, as `appliance backup list` shows it (`latest` for the newest)
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    #[command(flatten)]
    pub restic: BackupResticArgs,
    /// Restore even while Synapse, the warden or the agents' sandboxes run
    #[arg(long)]
    pub force: bool,
    /// The docker CLI that registers each agent volume before its data is put back (`DOCKER_HOST` is honoured)
    #[arg(long, value_name = "PROGRAM", default_value = "docker")]
    pub docker: String,
    /// Put the volumes' directories back without telling Docker (no Docker on this machine)
    #[arg(long)]
    pub without_docker: bool,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Say what would change (the closure difference, which sandboxes restart) and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// The flake `nixos-rebuild` builds the new system from (`--flake`) [default: nixos-rebuild's own]; with `--target-host`, `FLAKE#HOST`, built here
    #[arg(long, value_name = "REF", conflicts_with = "system")]
    pub flake: Option<String>,
    /// Upgrade that host over SSH (`root@hub`): build its system here (`--flake FLAKE#HOST`), `nix copy` it there, and run `appliance upgrade --system` there in a transient unit that a dropped connection does not stop
    #[arg(
        long,
        value_name = "USER@HOST",
        requires = "flake",
        conflicts_with_all = ["system", "system_program", "plan", "config", "restic", "state_dir", "homeserver", "audit", "docker", "without_docker"]
    )]
    pub target_host: Option<String>,
    /// Switch to this system, already built (`nix build .#nixosConfigurations.<host>.config.system.build.toplevel`, then `nix copy --to ssh://<host>`), instead of `nixos-rebuild switch`
    #[arg(long, value_name = "STORE-PATH", conflicts_with = "system_program")]
    pub system: Option<PathBuf>,
    /// Seconds the health gate waits for every sandbox to run and every agent to answer its probe mention
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
    /// The admin who says the probe mentions (`gendo` or `@gendo:magi`) [default: the plan's first admin]
    #[arg(long, value_name = "ADMIN")]
    pub probe_as: Option<String>,
    /// The bootstrap plan
    #[arg(long, value_name = "FILE", default_value = "/etc/appliance/bootstrap-plan.json")]
    pub plan: PathBuf,
    #[command(flatten)]
    pub restic: BackupResticArgs,
    /// State directory [default: the plan's]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Synapse's URL [default: the plan's]
    #[arg(long, value_name = "URL")]
    pub homeserver: Option<String>,
    /// The warden's audit trail [default: `<state>/warden/audit.jsonl`]
    #[arg(long, value_name = "FILE")]
    pub audit: Option<PathBuf>,
    /// The docker CLI that reports the sandboxes and registers restored volumes (`DOCKER_HOST` is honoured)
    #[arg(long, value_name = "PROGRAM", default_value = "docker")]
    pub docker: String,
    /// A rollback puts the volumes' directories back without telling Docker
    #[arg(long)]
    pub without_docker: bool,
    /// Hand the NixOS steps to PROGRAM (`generation`, `switch`, `switch-to N`, `diff`, `dry-activate`, `stop UNIT...`, `start UNIT...`): a host that is not NixOS, or a test's stand-in
    #[arg(long, value_name = "PROGRAM")]
    pub system_program: Option<String>,
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
pub struct ExplainArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Only this agent's sandboxes
    #[arg(value_name = "AGENT")]
    pub agent: Option<String>,
    /// Output format: a table per sandbox, JSON (docs/inspect.md), or a Graphviz graph of the allowed paths
    #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
    pub format: ExplainFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    Text,
    Json,
    /// Graphviz: hosts, sandboxes, services and each allowed path (`dot -Tsvg`)
    Dot,
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

#[derive(Debug, Args)]
#[command(after_help = "\
Targets map to the flake's outputs (docs/build-and-flash.md):
  gce-image  the spec's GCE host:  packages.x86_64-linux.gce-image
  rpi4       the spec's Pi:        packages.aarch64-linux.rpi4
  HOST       that host: its image, or for an existing NixOS host its system
  --cross    a Pi image cross-compiled on x86_64: packages.x86_64-linux.rpi4-cross

Arguments after `--` go to `nix build`, e.g.
  appliance build rpi4 -- --builders 'ssh://me@arm-box aarch64-linux'")]
pub struct BuildArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// `gce-image`, `rpi4`, or a host of the spec
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// Build nothing; list what would be built and what fetched
    #[arg(long)]
    pub dry_run: bool,
    /// Pi images only: cross-compile on x86_64 (`packages.x86_64-linux.rpi4-cross`) instead of building natively
    #[arg(long)]
    pub cross: bool,
    /// Print every build log line, not only the failing build's last lines
    #[arg(long, short = 'L')]
    pub print_build_logs: bool,
    /// The result symlink [default: `result-<host>` next to the spec]
    #[arg(long, value_name = "PATH")]
    pub out_link: Option<PathBuf>,
    /// Extra arguments for `nix build`
    #[arg(last = true, value_name = "NIX_ARGS")]
    pub nix_args: Vec<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Refuses, writing nothing: a device that is mounted, swap or held (or has such a
partition), a partition instead of the whole device, a device smaller than the
image, a regular file without --force-file, and a run without --yes when stdin
is not a terminal. After writing it fsyncs, reads the device back and compares
sha256; every error says what the device holds.

  sudo appliance flash --image result-pi --device /dev/sdX")]
pub struct FlashArgs {
    /// The image: `.img`, `.img.zst`, or a build result holding one (`result-pi`)
    #[arg(long, value_name = "PATH")]
    pub image: PathBuf,
    /// The whole device to overwrite, e.g. `/dev/sdb` or `/dev/mmcblk0`
    #[arg(long, value_name = "DEV")]
    pub device: PathBuf,
    /// Do not ask; required when stdin is not a terminal
    #[arg(long)]
    pub yes: bool,
    /// Allow a regular file as the device (for tests and for images to copy elsewhere)
    #[arg(long)]
    pub force_file: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Steps: upload the image to gs://BUCKET; create the image (it boots legacy BIOS:
VIRTIO_SCSI_MULTIQUEUE,GVNIC, no UEFI_COMPATIBLE); open UDP 51820 for WireGuard
when the spec has several hosts; create the VM (machine type from the spec's
GPUs, --maintenance-policy=TERMINATE, no service account); find its address.
Project, zone and bucket are never guessed (docs/build-and-flash.md).

  appliance gce --project my-project --zone us-central1-a --bucket my-bucket")]
pub struct GceArgs {
    #[command(flatten)]
    pub spec: SpecArgs,
    /// The GCE host [default: the spec's only `target = "gce"` host]
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Google Cloud project
    #[arg(long, value_name = "PROJECT", env = "APPLIANCE_GCE_PROJECT")]
    pub project: Option<String>,
    /// Zone of the VM; it must offer the host's GPUs
    #[arg(long, value_name = "ZONE", env = "APPLIANCE_GCE_ZONE")]
    pub zone: Option<String>,
    /// Cloud Storage bucket the image is uploaded to (name only, no `gs://`)
    #[arg(long, value_name = "BUCKET", env = "APPLIANCE_GCE_BUCKET")]
    pub bucket: Option<String>,
    /// The built image: a `.raw.tar.gz` or the build result holding it [default: `result-<host>` next to the spec]
    #[arg(long, value_name = "PATH")]
    pub image: Option<PathBuf>,
    /// Machine type, instead of the one chosen for the host's GPUs
    #[arg(long, value_name = "TYPE")]
    pub machine_type: Option<String>,
    /// Boot disk size in GB; the root file system grows to fill it and holds the models
    #[arg(long, value_name = "GB", default_value_t = 500)]
    pub disk_size: u32,
    /// Run the steps with gcloud instead of printing them
    #[arg(long)]
    pub run: bool,
}
