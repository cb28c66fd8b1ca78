//! A sandbox's `docker run` options, in one place.
//!
//! The NixOS module passes these to `virtualisation.oci-containers` and the
//! integration tests pass the very same list to a real dockerd, so what is
//! proven under gVisor is what the appliance runs.

use std::collections::BTreeMap;

use crate::generator::model::{BindSource, Sandbox};

/// Docker options of one sandbox, split the way oci-containers takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// Options with no oci-containers equivalent (`extraOptions`).
    pub flags: Vec<String>,
    pub user: String,
    /// `name:/target[:ro]` for named volumes.
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
    let mut flags = vec![
        format!("--runtime={}", sandbox.runtime),
        // A hostname that survives the container: agents record it with
        // their PID in single-instance leases on the state volume, and
        // OpenClaw cannot tell a dead owner on "another host" (the next
        // container's random hostname) from a live one, so after a kill it
        // refused to start for the lease's 5 minutes.
        format!("--hostname={}", sandbox.name),
    ];
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
        let owner = tmpfs
            .owner
            .map_or_else(String::new, |(uid, gid)| format!(",uid={uid},gid={gid}"));
        // Docker's `--tmpfs` is `noexec` unless told `exec`: say which.
        let exec = if tmpfs.exec { "exec" } else { "noexec" };
        flags.push(format!(
            "--tmpfs={}:rw,{exec},nosuid,nodev,size={},mode={}{owner}",
            tmpfs.target, tmpfs.size, tmpfs.mode
        ));
    }
    match &sandbox.network {
        None => flags.push("--network=none".into()),
        Some(network) => {
            flags.push(format!("--network={}", network.name));
            flags.push(format!("--ip={}", network.address));
            // No `--dns`: it has no effect on a user-defined network (see
            // `sandbox::resolver_bind`); the resolver is a bind mount.
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
            .map(|v| format!("{}:{}{}", v.name, v.target, if v.read_only { ":ro" } else { "" }))
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
        ports: sandbox
            .publish
            .iter()
            .map(|p| {
                let on = sandbox.publish_on.map_or_else(String::new, |a| format!("{a}:"));
                format!("{on}{p}:{}", sandbox.gateway_port.unwrap_or(*p))
            })
            .collect(),
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::generator::model::{Host, MIN_PIDS, SOCKET_DIR};
    use crate::test_support::{default_spec, each_shipped_host};

    /// `check` of every sandbox of the shipped specs, with its host.
    fn each_shipped_sandbox(mut check: impl FnMut(&Host, &Sandbox)) {
        each_shipped_host(|_, host| {
            for sandbox in &host.sandboxes {
                check(host, sandbox);
            }
        });
    }

    /// The baseline of issue 3, item 2, for every sandbox of every shipped spec.
    #[test]
    fn every_sandbox_keeps_the_baseline() {
        each_shipped_sandbox(|host, sandbox| {
            let at = format!("host `{}`: sandbox `{}`", host.name, sandbox.name);
            let args = run_options(sandbox).cli_args(|_| "/src".into());
            for required in ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"] {
                assert!(args.iter().any(|a| a == required), "{at}: no {required}");
            }
            assert!(sandbox.pids_limit >= MIN_PIDS, "{at}: pids");
            assert!(args.iter().any(|a| a.starts_with("--memory=")), "{at}");
            assert!(args.iter().any(|a| a.starts_with("--cpus=")), "{at}");
            assert!(!args.iter().any(|a| a.contains("privileged")), "{at}");
            // Permissions beyond strict come with reasons, and only
            // the Docker-in-gVisor sandbox adds capabilities.
            assert_eq!(sandbox.runtime == "runsc", sandbox.runtime_reasons.is_empty(), "{at}");
            assert_eq!(!sandbox.cap_add.is_empty(), sandbox.profile.docker_in_gvisor, "{at}");
            assert_eq!(sandbox.user.starts_with("0:"), sandbox.root_reason.is_some(), "{at}");
            assert_eq!(
                args.iter().any(|a| a.starts_with("--device")),
                sandbox.gpus && sandbox.profile.gpu.is_some(),
                "{at}: GPU devices only for GPU sandboxes"
            );
            assert_eq!(
                args.iter().filter(|a| a.starts_with("--publish")).count(),
                sandbox.publish.len(),
                "{at}: no published port unless declared"
            );
            // Secrets never inline: env values are plain settings,
            // or the placeholder of a credential the proxy adds.
            for (key, value) in &sandbox.environment {
                if sandbox
                    .credentials
                    .iter()
                    .any(|c| &c.variable == key && &c.placeholder == value)
                {
                    continue;
                }
                let upper = key.to_uppercase();
                assert!(
                    !["TOKEN", "PASSWORD", "SECRET", "API_KEY"]
                        .iter()
                        .any(|s| upper.contains(s)),
                    "{at}: `{key}` looks like a secret in the environment"
                );
            }
            for bind in &sandbox.binds {
                let BindSource::Host(path) = &bind.source else { continue };
                if path.starts_with(SOCKET_DIR) {
                    // Only the exec sandbox and its own agent see a socket dir.
                    let owner = &path[SOCKET_DIR.len() + 1..];
                    assert!(
                        owner == sandbox.name || sandbox.agent.as_ref().is_some_and(|a| owner == format!("{a}-exec")),
                        "{at}: socket dir `{path}`"
                    );
                    assert_eq!(bind.read_only, !sandbox.profile.docker_in_gvisor, "{at}");
                } else {
                    assert!(bind.read_only, "{at}: host bind `{path}` must be read-only");
                }
            }
        });
    }

    /// The code-execution sandbox as gVisor's Docker-in-gVisor tutorial has
    /// it, scoped to its one consumer.
    #[test]
    fn docker_in_gvisor_is_scoped_to_its_agent() {
        let appliance = default_spec();
        let (_, exec) = appliance.sandbox("casper-exec").unwrap();
        let (_, casper) = appliance.sandbox("casper").unwrap();
        assert_eq!(exec.runtime, "runsc-dind");
        assert_eq!(casper.runtime, "runsc-uds-open");
        let gid = casper.user.split_once(':').unwrap().1;
        for arg in ["--iptables=false", "--ip6tables=false", &format!("--group={gid}")] {
            assert!(exec.command.iter().any(|c| c == arg), "inner dockerd lacks {arg}");
        }
        // `code-storage = "8g"` in the default spec.
        let docker_tmpfs = exec.tmpfs.iter().find(|t| t.target == "/var/lib/docker").unwrap();
        assert_eq!(docker_tmpfs.size.to_string(), "8g");
        // Inner containers' root filesystems live there: exec (issue 10
        // item 5). Every other tmpfs of every sandbox is noexec, said so.
        for (_, sandbox) in appliance
            .hosts
            .iter()
            .flat_map(|(h, host)| host.sandboxes.iter().map(move |s| (h, s)))
        {
            for arg in run_options(sandbox).flags.iter().filter(|f| f.starts_with("--tmpfs=")) {
                let code_storage = sandbox.name == exec.name && arg.starts_with("--tmpfs=/var/lib/docker:");
                let wanted = if code_storage { ":rw,exec," } else { ":rw,noexec," };
                assert!(arg.contains(wanted), "{}: {arg}", sandbox.name);
            }
        }
        assert!(exec.network.is_none(), "code gets no network unless the spec says so");
        // No other sandbox anywhere gets the permissive runtimes.
        for host in appliance.hosts.values() {
            for sandbox in &host.sandboxes {
                if sandbox.name != exec.name {
                    assert_ne!(sandbox.runtime, "runsc-dind", "{}", sandbox.name);
                }
                if sandbox.name != casper.name {
                    assert!(!sandbox.runtime.contains("uds"), "{}", sandbox.name);
                }
            }
        }
    }

    /// Issue 10 item 6: `--dns` did nothing on the user-defined network
    /// under gVisor; every networked sandbox reads the generated resolv.conf.
    #[test]
    fn networked_sandboxes_get_the_generated_resolver() {
        each_shipped_sandbox(|host, sandbox| {
            let options = run_options(sandbox);
            assert!(
                !options.flags.iter().any(|f| f.starts_with("--dns")),
                "{}",
                sandbox.name
            );
            let resolver = options.binds.iter().find(|b| b.target == "/etc/resolv.conf");
            match &sandbox.network {
                Some(_) => {
                    let bind = resolver.unwrap_or_else(|| panic!("{}: no resolv.conf", sandbox.name));
                    assert!(bind.read_only, "{}", sandbox.name);
                    assert_eq!(
                        bind.source,
                        BindSource::Generated(format!("hosts/{}/resolv.conf", host.name))
                    );
                }
                None => assert!(resolver.is_none(), "{}: resolver without a network", sandbox.name),
            }
        });
    }

    /// Issue 10 item 5: Hermes' Docker backend binds paths of its own state
    /// into code containers; the inner daemon finds them, read-only.
    #[test]
    fn the_code_sandbox_reads_its_agents_state() {
        let appliance = default_spec();
        let (_, exec) = appliance.sandbox("casper-exec").unwrap();
        let (_, casper) = appliance.sandbox("casper").unwrap();
        let exec_volumes = run_options(exec).volumes;
        for volume in &casper.volumes {
            let wanted = format!("{}:{}:ro", volume.name, volume.target);
            assert!(exec_volumes.contains(&wanted), "{exec_volumes:?} lacks {wanted}");
        }
    }

    /// Hermes reaches Matrix directly: it ignores NO_PROXY for Matrix, so
    /// it gets no proxy variables; its browser still gets the proxy.
    #[test]
    fn hermes_gets_no_proxy_variables() {
        let appliance = default_spec();
        let (_, casper) = appliance.sandbox("casper").unwrap();
        for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            assert!(!casper.environment.contains_key(key), "casper has {key}");
        }
        let browser = casper
            .environment
            .get("AGENT_BROWSER_ARGS")
            .cloned()
            .unwrap_or_default();
        assert!(browser.contains("--proxy-server="), "{browser}");
    }

    /// Restarted sandboxes keep their identity (OpenClaw's owner lease).
    #[test]
    fn every_sandbox_has_a_stable_hostname() {
        each_shipped_sandbox(|_, sandbox| {
            let wanted = format!("--hostname={}", sandbox.name);
            assert!(run_options(sandbox).flags.contains(&wanted), "{}", sandbox.name);
        });
    }

    /// Issue 10 item 3: OpenClaw's state dir is its volume, and it neither
    /// refreshes the public model catalog nor runs its heartbeat DM.
    #[test]
    fn openclaw_keeps_its_state_and_to_itself() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let appliance = default_spec();
        let (_, melchior) = appliance.sandbox("melchior").unwrap();
        let state = &melchior.volumes[0].target;
        assert_eq!(melchior.environment.get("OPENCLAW_STATE_DIR"), Some(state));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("generated/agents/melchior/openclaw.json")).unwrap())
                .unwrap();
        assert_eq!(config["models"]["catalogRefresh"]["enabled"], false);
        assert_eq!(config["agents"]["defaults"]["heartbeat"]["every"], "0m");
    }

    #[test]
    fn chromium_gets_a_large_shm() {
        let appliance = default_spec();
        let (_, melchior) = appliance.sandbox("melchior").unwrap();
        assert!(run_options(melchior).flags.contains(&"--shm-size=1g".to_string()));
        let (_, balthasar) = appliance.sandbox("balthasar").unwrap();
        assert!(!run_options(balthasar).flags.iter().any(|f| f.starts_with("--shm-size")));
    }
}
