//! gVisor runtime profiles: which runsc flags a sandbox gets, and how each
//! flag is spelled by the runsc versions we support.
//!
//! A sandbox gets the strict profile unless the spec gives it a reason for
//! more. Each extra permission is a separate, named Docker runtime so that no
//! other container can pick it up by accident.

use std::fmt;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::spec::schema::{DriverCapability, Platform};

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
            reasons.push("nvproxy: the sandbox was given GPUs in the spec");
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

/// runsc releases whose flag names we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunscVersion {
    /// gVisor release-2026xxxx, what the appliance ships.
    Current,
    /// Debian bookworm's 0.0~20221219.0, used by our tests.
    Debian2022,
}

impl fmt::Display for RunscVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunscVersion::Current => f.write_str("current gVisor"),
            RunscVersion::Debian2022 => f.write_str("runsc 20221219"),
        }
    }
}

impl Flag {
    /// The command-line spelling for one runsc version, or an error when
    /// that version has no such flag: never a silent pass-through.
    pub fn spell(&self, version: RunscVersion) -> Result<String> {
        use RunscVersion::{Current, Debian2022};
        Ok(match (self, version) {
            (Flag::Platform(Platform::Systrap), Debian2022) => {
                bail!("{version} has no systrap platform; use `platform = \"ptrace\"` or `\"kvm\"`")
            }
            (Flag::Platform(platform), _) => format!("--platform={}", platform_name(*platform)),
            (Flag::RootOverlay, Current) => "--overlay2=root:memory".to_string(),
            (Flag::RootOverlay, Debian2022) => "--overlay2=root:memory".to_string(),
            (Flag::NetRaw, _) => "--net-raw=true".to_string(),
            (Flag::AllowPacketSocketWrite, Current) => "--allow-packet-socket-write=true".to_string(),
            (Flag::AllowPacketSocketWrite, Debian2022) => "--TESTONLY-allow-packet-endpoint-write=true".to_string(),
            (Flag::HostUds(mode), _) => format!("--host-uds={mode}"),
            (Flag::Nvproxy, _) => "--nvproxy=true".to_string(),
            (Flag::NvproxyCapabilities(capabilities), _) => {
                let names: Vec<&str> = capabilities.iter().map(|c| capability_name(*c)).collect();
                format!("--nvproxy-allowed-driver-capabilities={}", names.join(","))
            }
        })
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
    profile.flags(platform).iter().map(|flag| flag.spell(version)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_profile_has_no_permissive_flag() {
        let args = runtime_args(&Profile::STRICT, Platform::Systrap, RunscVersion::Current).unwrap();
        assert_eq!(args, ["--platform=systrap", "--overlay2=root:memory"]);
        assert_eq!(Profile::STRICT.name(), "runsc");
        assert!(Profile::STRICT.reasons().is_empty());
    }

    #[test]
    fn docker_in_gvisor_flags_are_spelled_per_version() {
        let dind = Profile {
            docker_in_gvisor: true,
            host_uds: HostUds::Create,
            gpu: None,
        };
        let current = runtime_args(&dind, Platform::Systrap, RunscVersion::Current).unwrap();
        assert!(current.contains(&"--allow-packet-socket-write=true".to_string()));
        let old = runtime_args(&dind, Platform::Ptrace, RunscVersion::Debian2022).unwrap();
        assert!(old.contains(&"--TESTONLY-allow-packet-endpoint-write=true".to_string()));
        assert!(old.contains(&"--host-uds=create".to_string()));
    }

    #[test]
    fn systrap_is_an_error_for_old_runsc() {
        let error = runtime_args(&Profile::STRICT, Platform::Systrap, RunscVersion::Debian2022).unwrap_err();
        assert!(error.to_string().contains("no systrap platform"));
    }
}
