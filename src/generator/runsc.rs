//! gVisor runtime profiles: which runsc flags a sandbox gets, and how each
//! flag is spelled by the runsc versions we support.
//!
//! A sandbox gets the strict profile unless the spec gives it a reason for
//! more. Each extra permission is a separate, named Docker runtime so that no
//! other container can pick it up by accident.

use std::fmt;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::generator::spec::schema::{DriverCapability, Platform};

/// Access to host Unix domain sockets (`--host-uds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostUds {
    /// No host socket can be reached or created (gVisor's default).
    None,
    /// connect(2) to sockets that already exist on the host.
    Open,
    /// bind(2) sockets that then appear on the host.
    Create,
}

/// What a sandbox needs from gVisor beyond the strict default.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Profile {
    /// Raw and packet sockets for a Docker daemon inside the sandbox.
    pub docker_in_gvisor: bool,
    pub host_uds: HostUds,
    /// nvproxy with these driver capabilities.
    pub gpu: Option<Vec<DriverCapability>>,
}

impl Profile {
    pub const STRICT: Profile = Profile {
        docker_in_gvisor: false,
        host_uds: HostUds::None,
        gpu: None,
    };

    /// The Docker runtime name; stable, because run options refer to it.
    pub fn name(&self) -> String {
        if self.docker_in_gvisor {
            return "runsc-dind".to_string();
        }
        let mut name = String::from("runsc");
        match self.host_uds {
            HostUds::None => {}
            HostUds::Open => name.push_str("-uds-open"),
            HostUds::Create => name.push_str("-uds-create"),
        }
        if self.gpu.is_some() {
            name.push_str("-gpu");
        }
        name
    }

    /// Flags in a fixed order, before spelling for a runsc version.
    pub fn flags(&self, platform: Platform) -> Vec<Flag> {
        let mut flags = vec![Flag::Platform(platform), Flag::RootOverlay];
        if self.docker_in_gvisor {
            flags.push(Flag::NetRaw);
            flags.push(Flag::AllowPacketSocketWrite);
        }
        match self.host_uds {
            HostUds::None => {}
            HostUds::Open => flags.push(Flag::HostUds("open")),
            HostUds::Create => flags.push(Flag::HostUds("create")),
        }
        if let Some(capabilities) = &self.gpu {
            flags.push(Flag::Nvproxy);
            flags.push(Flag::NvproxyCapabilities(capabilities.clone()));
        }
        flags
    }

    /// Why this profile is more permissive than strict; empty for strict.
    pub fn reasons(&self) -> Vec<&'static str> {
        let mut reasons = Vec::new();
        if self.docker_in_gvisor {
            reasons.push(
                "raw sockets and packet writes: dockerd v28+ needs them inside gVisor; \
                 only the code-execution sandbox gets them",
            );
        }
        match self.host_uds {
            HostUds::None => {}
            HostUds::Open => reasons.push(
                "host UDS open: connects to the code-execution sandbox's Docker socket, \
                 in one dedicated host directory",
            ),
            HostUds::Create => {
                reasons.push("host UDS create: the inner Docker daemon's socket must appear on the host")
            }
        }
        if self.gpu.is_some() {
            reasons.push(
                "nvproxy: the sandbox uses the host's GPUs (Ollama on a GPU host, or an agent with \
                 `gpu = true`), with only the spec's driver capabilities",
            );
        }
        reasons
    }
}

/// A runsc flag, independent of how a given runsc version spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    Platform(Platform),
    RootOverlay,
    NetRaw,
    AllowPacketSocketWrite,
    HostUds(&'static str),
    Nvproxy,
    NvproxyCapabilities(Vec<DriverCapability>),
}

/// runsc releases whose flag names we know: one family per spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunscVersion {
    /// gVisor release-2026xxxx, what the appliance ships.
    Current,
    /// Debian bookworm-backports' 0.0~20240729.0, what CI runs: systrap and
    /// nvproxy, but packet writes still spelled `TESTONLY-...` and no
    /// `--nvproxy-allowed-driver-capabilities`.
    Release2024,
    /// Debian bookworm's 0.0~20221219.0: no systrap, no nvproxy.
    Debian2022,
}

impl fmt::Display for RunscVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunscVersion::Current => f.write_str("current gVisor"),
            RunscVersion::Release2024 => f.write_str("runsc 20240729"),
            RunscVersion::Debian2022 => f.write_str("runsc 20221219"),
        }
    }
}

impl RunscVersion {
    /// The spelling family of a binary, from the first line of
    /// `runsc --version` (`runsc version release-20260525.0` or
    /// `runsc version 0.0~20221219.0`). Builds dated before 2023 use the old
    /// names; anything else, including unparseable versions, the current
    /// ones (`appliance doctor` then checks each flag against `runsc flags`).
    pub fn from_version_output(output: &str) -> RunscVersion {
        match release_date(output) {
            Some(date) if date < 2023_0000 => RunscVersion::Debian2022,
            Some(date) if date < 2025_0000 => RunscVersion::Release2024,
            _ => RunscVersion::Current,
        }
    }

    /// The spelling family of a binary from what `runsc flags` lists, which
    /// beats any guess from the release date: the packet-write flag's name
    /// and the platforms built in tell the families apart. `None` when the
    /// listing has neither packet-write spelling.
    pub fn from_listing(listing: &FlagListing) -> Option<RunscVersion> {
        if listing.names.contains("allow-packet-socket-write") {
            Some(RunscVersion::Current)
        } else if listing.names.contains("TESTONLY-allow-packet-endpoint-write") {
            Some(if listing.has_platform(Platform::Systrap) {
                RunscVersion::Release2024
            } else {
                RunscVersion::Debian2022
            })
        } else {
            None
        }
    }
}

/// The spelling family and flag listing of the runsc binary at `path`, from
/// `runsc flags` (Go's flag package prints it on stderr) and, failing that,
/// `runsc --version`. Used by the tests that run the host's real runsc.
pub fn probe_binary(path: &std::path::Path) -> std::io::Result<(RunscVersion, FlagListing)> {
    let run = |arg: &str| -> std::io::Result<String> {
        let output = std::process::Command::new(path).arg(arg).output()?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok(text)
    };
    let listing = FlagListing::parse(&run("flags")?);
    let version = match RunscVersion::from_listing(&listing) {
        Some(version) => version,
        None => RunscVersion::from_version_output(&run("--version")?),
    };
    Ok((version, listing))
}

/// The release date (YYYYMMDD) in `runsc --version` or in a release name
/// (`release-20260525.0`, `0.0~20221219.0`, `20260316.0`), also of a build
/// between releases as gVisor's `go` branch names it (`git describe`:
/// `release-20260406.0-43-g283af82a6`, release 20260406.0 plus 43 commits).
/// `None` for a build that says no release (`VERSION_MISSING`).
pub fn release_date(text: &str) -> Option<u32> {
    let first = text.lines().next().unwrap_or("");
    let name = first.split_whitespace().last().unwrap_or("");
    // Debian's `0.0~` prefix and `release-` both sit before the date.
    let name = name.rsplit('~').next().unwrap_or(name);
    let name = name.strip_prefix("release-").unwrap_or(name);
    name.get(..8)
        .filter(|date| date.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|date| date.parse().ok())
}

impl Flag {
    /// The flag's name and value for one runsc version, or an error when
    /// that version has no such flag: never a silent pass-through.
    ///
    /// This match is the one table of flag spellings; `appliance doctor`
    /// checks the names against a host's `runsc flags`.
    pub fn name_and_value(&self, version: RunscVersion) -> Result<(&'static str, String)> {
        use RunscVersion::{Current, Debian2022, Release2024};
        Ok(match (self, version) {
            (Flag::Platform(Platform::Systrap), Debian2022) => {
                bail!("{version} has no systrap platform; use `platform = \"ptrace\"` or `\"kvm\"`")
            }
            (Flag::Platform(platform), _) => ("platform", platform_name(*platform).to_string()),
            // Every version takes `root:memory`; 2022 has no `self` medium.
            // With Docker's `--read-only` the overlay stays read-only (tested),
            // so it holds no data; any write to a writable root would be
            // charged to the container's memory limit instead of the image
            // directory on the host's disk.
            (Flag::RootOverlay, Current | Release2024 | Debian2022) => ("overlay2", "root:memory".to_string()),
            (Flag::NetRaw, _) => ("net-raw", "true".to_string()),
            (Flag::AllowPacketSocketWrite, Current) => ("allow-packet-socket-write", "true".to_string()),
            (Flag::AllowPacketSocketWrite, Release2024 | Debian2022) => {
                ("TESTONLY-allow-packet-endpoint-write", "true".to_string())
            }
            (Flag::HostUds(mode), _) => ("host-uds", (*mode).to_string()),
            (Flag::Nvproxy | Flag::NvproxyCapabilities(_), Debian2022) => {
                bail!("{version} has no nvproxy; GPU sandboxes need a gVisor release from 2024 or later")
            }
            (Flag::Nvproxy, Current | Release2024) => ("nvproxy", "true".to_string()),
            (Flag::NvproxyCapabilities(_), Release2024) => {
                bail!(
                    "{version} has no --nvproxy-allowed-driver-capabilities and allows only compute and \
                     utility; these driver capabilities need a current gVisor"
                )
            }
            (Flag::NvproxyCapabilities(capabilities), Current) => {
                let names: Vec<&str> = capabilities.iter().map(|c| capability_name(*c)).collect();
                ("nvproxy-allowed-driver-capabilities", names.join(","))
            }
        })
    }

    /// Whether `version` needs this flag said at all: 20240729 has no
    /// driver-capabilities flag and allows only compute and utility, so
    /// those (the default) need none there.
    pub fn needed_on(&self, version: RunscVersion) -> bool {
        match (self, version) {
            (Flag::NvproxyCapabilities(capabilities), RunscVersion::Release2024) => {
                let mut sorted = capabilities.clone();
                sorted.sort();
                sorted != [DriverCapability::Compute, DriverCapability::Utility]
            }
            _ => true,
        }
    }

    /// The command-line spelling for one runsc version.
    pub fn spell(&self, version: RunscVersion) -> Result<String> {
        let (name, value) = self.name_and_value(version)?;
        Ok(format!("--{name}={value}"))
    }
}

pub fn platform_name(platform: Platform) -> &'static str {
    match platform {
        Platform::Systrap => "systrap",
        Platform::Kvm => "kvm",
        Platform::Ptrace => "ptrace",
    }
}

pub fn capability_name(capability: DriverCapability) -> &'static str {
    match capability {
        DriverCapability::Compute => "compute",
        DriverCapability::Utility => "utility",
        DriverCapability::Graphics => "graphics",
        DriverCapability::Video => "video",
    }
}

/// Spells every flag of a profile, failing on the first unknown one.
pub fn runtime_args(profile: &Profile, platform: Platform, version: RunscVersion) -> Result<Vec<String>> {
    profile
        .flags(platform)
        .iter()
        .filter(|flag| flag.needed_on(version))
        .map(|flag| flag.spell(version))
        .collect()
}

/// What a runsc binary says it supports, parsed from `runsc flags`: Go's
/// flag listing, one `  -name [type]` line per flag, then its indented help.
#[derive(Debug, Clone, Default)]
pub struct FlagListing {
    /// Flag names without dashes.
    pub names: std::collections::BTreeSet<String>,
    /// Help text of `-platform`, which names the platforms built in.
    pub platform_help: String,
}

impl FlagListing {
    pub fn parse(text: &str) -> FlagListing {
        let mut listing = FlagListing::default();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim_start();
            // Flag lines are indented by two spaces, help lines by a tab.
            if line.starts_with("  -") {
                let name = trimmed[1..].split_whitespace().next().unwrap_or("");
                current = name.trim_start_matches('-').to_string();
                listing.names.insert(current.clone());
            } else if current == "platform" {
                listing.platform_help.push_str(trimmed);
                listing.platform_help.push('\n');
            }
        }
        listing
    }

    /// Whether the `-platform` help names this platform.
    pub fn has_platform(&self, platform: Platform) -> bool {
        self.platform_help.contains(platform_name(platform))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code-execution sandbox's profile: Docker in gVisor, its inner
    /// daemon's socket made on the host.
    const DIND: Profile = Profile {
        docker_in_gvisor: true,
        host_uds: HostUds::Create,
        gpu: None,
    };

    #[test]
    fn strict_profile_has_no_permissive_flag() {
        let args = runtime_args(&Profile::STRICT, Platform::Systrap, RunscVersion::Current).unwrap();
        assert_eq!(args, ["--platform=systrap", "--overlay2=root:memory"]);
        assert_eq!(Profile::STRICT.name(), "runsc");
        assert!(Profile::STRICT.reasons().is_empty());
    }

    #[test]
    fn docker_in_gvisor_flags_are_spelled_per_version() {
        let current = runtime_args(&DIND, Platform::Systrap, RunscVersion::Current).unwrap();
        assert!(current.contains(&"--allow-packet-socket-write=true".to_string()));
        let old = runtime_args(&DIND, Platform::Ptrace, RunscVersion::Debian2022).unwrap();
        assert!(old.contains(&"--TESTONLY-allow-packet-endpoint-write=true".to_string()));
        assert!(old.contains(&"--host-uds=create".to_string()));
    }

    #[test]
    fn versions_are_recognised_from_runsc_version() {
        let old = "runsc version 0.0~20221219.0\nspec: 1.0.2-dev\n";
        assert_eq!(RunscVersion::from_version_output(old), RunscVersion::Debian2022);
        let new = "runsc version release-20260525.0\nspec: 1.1.0\n";
        assert_eq!(RunscVersion::from_version_output(new), RunscVersion::Current);
        assert_eq!(RunscVersion::from_version_output("garbage"), RunscVersion::Current);
        let backports = "runsc version 0.0~20240729.0\nspec: 1.0.2-dev\n";
        assert_eq!(RunscVersion::from_version_output(backports), RunscVersion::Release2024);
        assert_eq!(release_date(new), Some(2026_0525));
        assert_eq!(release_date("20260316.0"), Some(2026_0316));
        let go_branch = "runsc version release-20260406.0-43-g283af82a6\nspec: 1.1.0-rc.1\n";
        assert_eq!(release_date(go_branch), Some(2026_0406));
        assert_eq!(release_date("runsc version VERSION_MISSING\n"), None);
    }

    #[test]
    fn the_flag_listing_decides_the_spelling() {
        let listing = |text: &str| FlagListing::parse(text);
        let backports = listing(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/runsc-flags-20240729.txt"
        )));
        assert_eq!(RunscVersion::from_listing(&backports), Some(RunscVersion::Release2024));
        let current = listing(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/runsc-flags-current.txt"
        )));
        assert_eq!(RunscVersion::from_listing(&current), Some(RunscVersion::Current));
        let old = listing("  -TESTONLY-allow-packet-endpoint-write\n  -platform string\n    \tptrace (default), kvm\n");
        assert_eq!(RunscVersion::from_listing(&old), Some(RunscVersion::Debian2022));
        assert_eq!(RunscVersion::from_listing(&listing("  -debug\n")), None);
    }

    #[test]
    fn release_2024_spells_packet_writes_the_old_way_and_has_systrap() {
        let args = runtime_args(&DIND, Platform::Systrap, RunscVersion::Release2024).unwrap();
        assert!(args.contains(&"--TESTONLY-allow-packet-endpoint-write=true".to_string()));
        assert!(args.contains(&"--platform=systrap".to_string()));
    }

    #[test]
    fn gpu_flags_are_an_error_for_old_runsc() {
        let gpu = Profile {
            docker_in_gvisor: false,
            host_uds: HostUds::None,
            gpu: Some(vec![DriverCapability::Compute, DriverCapability::Utility]),
        };
        let args = runtime_args(&gpu, Platform::Systrap, RunscVersion::Current).unwrap();
        assert!(args.contains(&"--nvproxy-allowed-driver-capabilities=compute,utility".to_string()));
        let error = runtime_args(&gpu, Platform::Ptrace, RunscVersion::Debian2022).unwrap_err();
        assert!(error.to_string().contains("no nvproxy"), "{error}");
    }

    #[test]
    fn flag_listing_is_parsed() {
        let text = "  -host-uds value\n    \tcontrols permission\n  -net-raw runsc exec\n    \tenable raw sockets\n  \
                    -platform string\n    \tspecifies which platform to use: ptrace (default), kvm. (default \"ptrace\")\n  \
                    -profile\n    \tprepares\n";
        let listing = FlagListing::parse(text);
        let names: Vec<&str> = listing.names.iter().map(String::as_str).collect();
        assert_eq!(names, ["host-uds", "net-raw", "platform", "profile"]);
        assert!(listing.has_platform(Platform::Ptrace));
        assert!(listing.has_platform(Platform::Kvm));
        assert!(!listing.has_platform(Platform::Systrap));
    }

    #[test]
    fn systrap_is_an_error_for_old_runsc() {
        let error = runtime_args(&Profile::STRICT, Platform::Systrap, RunscVersion::Debian2022).unwrap_err();
        assert!(error.to_string().contains("no systrap platform"));
    }
}
