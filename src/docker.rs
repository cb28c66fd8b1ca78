//! A sandbox's `docker run` options, in one place.
//!
//! The NixOS module passes these to `virtualisation.oci-containers` and the
//! integration tests pass the very same list to a real dockerd, so what is
//! proven under gVisor is what the appliance runs.

use std::collections::BTreeMap;

use crate::model::{BindSource, Sandbox};

/// Docker options of one sandbox, split the way oci-containers takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Options with no oci-containers equivalent (`extraOptions`).
    pub flags: Vec<String>,
    pub user: String,
    /// `name:/target` for named volumes.
    pub volumes: Vec<String>,
    pub binds: Vec<BindArg>,
    pub environment: BTreeMap<String, String>,
    pub env_files: Vec<String>,
    pub ports: Vec<String>,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindArg {
    pub source: BindSource,
    pub target: String,
    pub read_only: bool,
}

impl BindArg {
    /// `src:dst[:ro]`, with the source resolved by the caller.
    pub fn volume_arg(&self, source: &str) -> String {
        let suffix = if self.read_only { ":ro" } else { "" };
        format!("{source}:{}{suffix}", self.target)
    }
}

pub fn run_options(sandbox: &Sandbox) -> RunOptions {
    let mut flags = vec![format!("--runtime={}", sandbox.runtime)];
    if sandbox.read_only_root {
        flags.push("--read-only".into());
    }
    flags.push("--cap-drop=ALL".into());
    for cap in &sandbox.cap_add {
        flags.push(format!("--cap-add={cap}"));
    }
    if sandbox.no_new_privileges {
        flags.push("--security-opt=no-new-privileges".into());
    }
    flags.push(format!("--pids-limit={}", sandbox.pids_limit));
    flags.push(format!("--memory={}", sandbox.memory));
    flags.push(format!("--cpus={}", sandbox.cpus));
    if let Some(size) = &sandbox.shm_size {
        flags.push(format!("--shm-size={size}"));
    }
    for tmpfs in &sandbox.tmpfs {
        flags.push(format!(
            "--tmpfs={}:rw,nosuid,nodev,size={},mode={}",
            tmpfs.target, tmpfs.size, tmpfs.mode
        ));
    }
    match &sandbox.network {
        None => flags.push("--network=none".into()),
        Some(network) => {
            flags.push(format!("--network={}", network.name));
            flags.push(format!("--ip={}", network.address));
        }
    }
    if sandbox.gpus {
        // CDI devices from the NVIDIA container toolkit; nvproxy serves them.
        flags.push("--device=nvidia.com/gpu=all".into());
    }
    RunOptions {
        flags,
        user: sandbox.user.clone(),
        volumes: sandbox
            .volumes
            .iter()
            .map(|v| format!("{}:{}", v.name, v.target))
            .collect(),
        binds: sandbox
            .binds
            .iter()
            .map(|b| BindArg {
                source: b.source.clone(),
                target: b.target.clone(),
                read_only: b.read_only,
            })
            .collect(),
        environment: sandbox.environment.clone(),
        env_files: sandbox.env_files.clone(),
        ports: sandbox.publish.iter().map(|p| format!("{p}:{p}")).collect(),
        command: sandbox.command.clone(),
    }
}

impl RunOptions {
    /// The full `docker run` argument list (without image and command),
    /// with bind sources resolved by `resolve`.
    pub fn cli_args(&self, resolve: impl Fn(&BindSource) -> String) -> Vec<String> {
        let mut args = self.flags.clone();
        args.push(format!("--user={}", self.user));
        for volume in &self.volumes {
            args.push(format!("--volume={volume}"));
        }
        for bind in &self.binds {
            args.push(format!("--volume={}", bind.volume_arg(&resolve(&bind.source))));
        }
        for (key, value) in &self.environment {
            args.push(format!("--env={key}={value}"));
        }
        for file in &self.env_files {
            args.push(format!("--env-file={file}"));
        }
        for port in &self.ports {
            args.push(format!("--publish={port}"));
        }
        args
    }
}
