//! Run options for every sandbox, derived from what its agent needs.
//!
//! The baseline for every container: gVisor's strict runtime, read-only
//! root, all capabilities dropped, no-new-privileges, pids/memory/CPU limits,
//! no published port, secrets only as runtime files. Each addition below is
//! tied to a spec setting and says why.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::credentials;
use super::egress::{self, Egress, Services};
use super::image::{self, ImageLayout, Storage};
use super::size::Size;
use super::{
    APPROVAL_SOCKET_DIR, Agent, Bind, BindSource, DOCKER_SOCKET_FILE, Gpu, NETWORK_NAME, SOCKET_DIR, Sandbox,
    SandboxNetwork, Tmpfs, Volume,
};
use crate::generator::kinds;
use crate::generator::model::network::Subnet;
use crate::generator::runsc::{HostUds, Profile};
use crate::generator::spec::schema::{AgentSpec, Approval, Tool};

/// The image Hermes' Docker terminal runs code in; built by Nix
/// (nix/packages/code-runner.nix) and loaded by the code sandbox at start.
pub const CODE_RUNNER_IMAGE: &str = "agent-appliance/code-runner:1";

/// Where the code-execution sandbox's Docker socket directory is mounted,
/// in both the sandbox that creates it and the one that uses it.
const DOCKER_SOCKET_MOUNT: &str = "/run/appliance-docker";
/// Where the agent images put Chromium: dockerTools links the `bin/` of
/// every package in an image's `contents` into `/bin`. The agents' own
/// lookups try `/usr/bin/...` paths only (OpenClaw) or would download one
/// (Hermes), so their configs name it.
pub const CHROMIUM_PATH: &str = "/bin/chromium";
/// The resolver file every networked sandbox gets from the generated tree.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where an agent's runtime secrets appear inside its sandbox.
pub const SECRETS_MOUNT: &str = "/run/secrets/appliance";

/// The lowest `pids` a spec may set. Docker's `--pids-limit` caps the host
/// cgroup of the whole sandbox, and under gVisor that counts the sentry's
/// and gofer's host threads plus host tasks per guest thread, not the
/// agent's processes: measured with Debian's runsc (ptrace, 2 CPUs), an idle
/// sandbox uses 48 host tasks and each busybox process about 9 more, so a
/// limit of 128 fails at the tenth process. The sentry's threads grow with
/// the host's CPUs, hence the margin. See docs/sandboxes.md.
pub const MIN_PIDS: u32 = 512;

/// Capabilities dockerd needs inside gVisor (gVisor's Docker-in-gVisor
/// tutorial). They exist only in the sandbox's own kernel, never on the host.
const DIND_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_CHROOT",
    "SYS_PTRACE",
];

pub struct SandboxInputs<'a> {
    pub agent: &'a Agent,
    pub spec: &'a AgentSpec,
    pub network: &'a Subnet,
    pub gpu: Option<&'a Gpu>,
}

pub fn exec_sandbox_name(agent: &str) -> String {
    format!("{agent}-exec")
}

impl Sandbox {
    /// The baseline every sandbox starts from, which each builder
    /// overrides field by field (`Sandbox { .., ..Sandbox::strict(..) }`):
    /// `image`'s reference and user, `profile` with its reasons, a
    /// read-only root, no capability, no-new-privileges, no network, mount,
    /// environment, published port or command, and the limits of a small
    /// service (512 tasks, 512m, 1 CPU), which most builders raise.
    pub fn strict(name: String, purpose: String, layout: &ImageLayout, profile: Profile) -> Sandbox {
        let mut runtime_reasons: Vec<String> = profile.reasons().iter().map(|r| r.to_string()).collect();
        runtime_reasons.sort();
        Sandbox {
            name,
            purpose,
            agent: None,
            image: layout.reference(),
            runtime: profile.name(),
            runtime_reasons,
            profile,
            user: layout.account.user(),
            root_reason: None,
            read_only_root: true,
            tmpfs: Vec::new(),
            volumes: Vec::new(),
            binds: Vec::new(),
            cap_add: Vec::new(),
            no_new_privileges: true,
            pids_limit: 512,
            memory: Size::mib(512),
            cpus: "1".into(),
            shm_size: None,
            environment: BTreeMap::new(),
            env_files: Vec::new(),
            network: None,
            egress: Egress::None,
            credentials: Vec::new(),
            grants: None,
            reach: Vec::new(),
            publish: Vec::new(),
            publish_on: None,
            gateway_port: None,
            gpus: false,
            command: Vec::new(),
            depends_on: Vec::new(),
        }
    }
}

impl SandboxNetwork {
    /// On the sandboxes' bridge at `address`, resolving through the
    /// bridge's forwarder.
    pub fn bridge(address: Ipv4Addr, subnet: &Subnet) -> SandboxNetwork {
        SandboxNetwork {
            name: NETWORK_NAME.to_string(),
            address,
            dns: subnet.gateway(),
        }
    }
}

/// Where the warden's approval broker serves the Docker socket of code
/// sandbox `exec` (`docker.sock` in it).
pub fn approval_socket_dir(exec: &str) -> String {
    format!("{APPROVAL_SOCKET_DIR}/{exec}")
}

/// The agent's own sandbox and, with code execution, its Docker sandbox.
pub fn for_agent(inputs: &SandboxInputs) -> Vec<Sandbox> {
    let agent = inputs.agent;
    let spec = inputs.spec;
    let kind = kinds::of(agent.kind);
    let defaults = kind.sandbox();
    let layout = kind.image();
    let mut environment: BTreeMap<String, String> = defaults
        .environment
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    environment.insert("HOME".into(), layout.account.home.to_string());
    let gateway = inputs.network.gateway();
    environment.extend(
        kind.environment(agent, gateway)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    environment.extend(agent_proxy_environment(agent, gateway));
    environment.extend(credential_environment(agent));
    let mut binds = vec![
        Bind {
            source: BindSource::Generated(format!("agents/{}/{}", agent.name, defaults.config_file)),
            target: defaults.config_target.to_string(),
            read_only: true,
        },
        Bind {
            source: BindSource::Host(agent.secrets_dir.clone()),
            target: SECRETS_MOUNT.to_string(),
            read_only: true,
        },
        resolver_bind(&agent.host),
    ];
    if !agent.credentials.is_empty() {
        // The appliance CA's certificate, never its key: the proxy signs
        // the service's hosts for this sandbox only.
        binds.push(Bind {
            source: BindSource::Host(credentials::CA_DIR.to_string()),
            target: credentials::CA_MOUNT.to_string(),
            read_only: true,
        });
    }
    let mut profile = Profile::STRICT;
    let mut depends_on = Vec::new();
    let mut sandboxes = Vec::new();

    if agent.code_execution.is_some() {
        let exec = exec_sandbox(inputs, layout);
        // With approvals, the agent reaches its code sandbox's Docker only
        // through the warden's broker, which holds what would run code.
        let socket_dir = if agent.approve.contains(&Approval::CodeExecution) {
            approval_socket_dir(&exec.name)
        } else {
            format!("{SOCKET_DIR}/{}", exec.name)
        };
        binds.push(Bind {
            source: BindSource::Host(socket_dir),
            target: DOCKER_SOCKET_MOUNT.to_string(),
            read_only: true,
        });
        environment.insert(
            "DOCKER_HOST".into(),
            format!("unix://{DOCKER_SOCKET_MOUNT}/{DOCKER_SOCKET_FILE}"),
        );
        profile.host_uds = HostUds::Open;
        depends_on.push(exec.name.clone());
        sandboxes.push(exec);
    }
    let gpus = spec.gpu.as_ref().is_some_and(|g| *g.get_ref());
    if gpus {
        profile.gpu = inputs.gpu.map(|g| g.driver_capabilities.clone());
    }

    let browser = agent.tools.contains(&Tool::Browser);
    let own = Sandbox {
        agent: Some(agent.name.clone()),
        tmpfs: tmpfs_mounts(layout, None),
        volumes: volumes(layout, &agent.name),
        binds,
        pids_limit: spec.pids.as_ref().map_or(defaults.pids, |p| *p.get_ref()),
        memory: agent.limits.memory.unwrap_or(defaults.memory),
        cpus: format_cpus(spec.cpus.as_ref().map_or(defaults.cpus, |c| *c.get_ref())),
        // Chromium keeps its renderers' shared memory in /dev/shm; Docker's
        // 64m default crashes tabs.
        shm_size: browser.then_some(Size::gib(1)),
        environment,
        env_files: agent_env_files(agent),
        network: Some(SandboxNetwork::bridge(Ipv4Addr::UNSPECIFIED, inputs.network)),
        egress: agent.egress.clone(),
        credentials: agent.credentials.clone(),
        reach: agent_reach(agent, gateway),
        publish: spec.publish.iter().map(|p| *p.get_ref()).collect(),
        gateway_port: kind.supports().gateway.as_ref().map(|g| g.port),
        gpus,
        depends_on,
        ..Sandbox::strict(
            agent.sandbox.clone(),
            format!("{} agent `{}`", kind.label(), agent.name),
            layout,
            profile,
        )
    };
    sandboxes.insert(0, own);
    sandboxes
}

/// The agent's own env file (the bootstrap's), then webextract's key file
/// when its `crawler` tool uses it: the service and its clients share the
/// key the host made, and Docker reads both files on the host.
fn agent_env_files(agent: &Agent) -> Vec<String> {
    let mut files = vec![format!("{}/env", agent.secrets_dir)];
    if agent.extract_url.is_some() {
        files.push(crate::generator::model::services::EXTRACT_KEY_ENV.to_string());
    }
    files
}

/// What the agent's own sandbox may connect to: its Matrix, its model,
/// DNS, the proxy with egress, and the crawler's search and extraction
/// backends when it has the tool.
fn agent_reach(agent: &Agent, gateway: Ipv4Addr) -> Vec<egress::Reach> {
    let mut reach = egress::agent_reach(
        &Services {
            matrix: agent.matrix_address,
            inference: agent.inference_address,
            gateway,
        },
        &agent.egress,
    );
    if let Some(search) = agent.search_address {
        let why = "the `crawler` tool's search backend";
        reach.push(egress::Reach::tcp(egress::ReachService::Search, search, why));
    }
    if let Some(extract) = agent.extract_address {
        let why = "the `crawler` tool's page extraction backend";
        reach.push(egress::Reach::tcp(egress::ReachService::Extract, extract, why));
    }
    reach.sort();
    reach
}

/// `consumer` is the agent's image: the inner dockerd gives its socket the
/// agent's group, or the non-root agent could not connect.
fn exec_sandbox(inputs: &SandboxInputs, consumer: &ImageLayout) -> Sandbox {
    let consumer_user = consumer.account.user();
    let consumer_user = consumer_user.as_str();
    let agent = inputs.agent;
    let name = exec_sandbox_name(&agent.name);
    let layout = image::docker_in_gvisor();
    let profile = Profile {
        docker_in_gvisor: true,
        host_uds: HostUds::Create,
        gpu: None,
    };
    Sandbox {
        agent: Some(agent.name.clone()),
        root_reason: Some(
            "dockerd must be root inside the sandbox to create containers; \
             gVisor's root has no host privileges"
                .into(),
        ),
        tmpfs: tmpfs_mounts(layout, agent.limits.code_storage),
        // The agent's state, read-only, at the agent's own paths: its Docker
        // backend bind-mounts paths of its state into code containers
        // (Hermes: skills and caches, read-only), and the inner daemon looks
        // them up here; without them it tried `mkdir /opt/data` on the
        // read-only root. The code containers see only what the agent binds.
        volumes: volumes(layout, &agent.name)
            .into_iter()
            .chain(
                volumes(consumer, &agent.name)
                    .into_iter()
                    .map(|v| Volume { read_only: true, ..v }),
            )
            .collect(),
        binds: [Bind {
            source: BindSource::Host(format!("{SOCKET_DIR}/{name}")),
            target: DOCKER_SOCKET_MOUNT.to_string(),
            read_only: false,
        }]
        .into_iter()
        .chain(agent.code_network.then(|| resolver_bind(&agent.host)))
        .collect(),
        cap_add: DIND_CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        // An inner dockerd, containerd and the containers they run; every
        // guest thread is a host task (see `MIN_PIDS`).
        pids_limit: 8192,
        memory: Size::gib(8),
        cpus: "2".into(),
        environment: exec_environment(agent, inputs.network.gateway()),
        // Code gets a network only when the spec allows it.
        network: agent
            .code_network
            .then(|| SandboxNetwork::bridge(Ipv4Addr::UNSPECIFIED, inputs.network)),
        // With a network, code follows the agent's egress policy; it never
        // reaches Matrix or the model.
        egress: if agent.code_network {
            agent.egress.clone()
        } else {
            Egress::None
        },
        reach: if agent.code_network {
            egress::code_reach(inputs.network.gateway(), &agent.egress)
        } else {
            Vec::new()
        },
        command: dind_command(agent, consumer_user),
        ..Sandbox::strict(
            name,
            format!("Docker daemon running the code of agent `{}`", agent.name),
            layout,
            profile,
        )
    }
}

/// The code sandbox's command: its dockerd, which gives the socket the
/// agent's group (`consumer_user` is the agent's `uid:gid`).
fn dind_command(agent: &Agent, consumer_user: &str) -> Vec<String> {
    vec![
        // dockerd, then `docker load` of the code-runner image.
        "appliance-dind-start".into(),
        format!("--host=unix://{DOCKER_SOCKET_MOUNT}/{DOCKER_SOCKET_FILE}"),
        // root:<agent's gid> 0660 instead of root:docker, a group the
        // agent's image does not have.
        format!(
            "--group={}",
            consumer_user.split_once(':').map_or(consumer_user, |(_, gid)| gid)
        ),
        // gVisor's netstack has no iptables for the inner daemon.
        "--iptables=false".into(),
        "--ip6tables=false".into(),
    ]
    .into_iter()
    // Without `code-network` the code containers run `--network=none`:
    // no inner bridge and nothing to forward. dockerd otherwise writes
    // /proc/sys/net/ipv4/ip_forward at start and exits when the sandbox
    // refuses it ("Enabling IP forwarding failed").
    .chain(
        (!agent.code_network)
            .then(|| ["--bridge=none".to_string(), "--ip-forward=false".to_string()])
            .into_iter()
            .flatten(),
    )
    .collect()
}

/// The proxy variables of an agent with egress; Matrix and the model stay
/// direct.
/// Kinds whose runtimes mishandle the variables get none
/// ([`kinds::SandboxNeeds::proxy_env`]).
fn agent_proxy_environment(agent: &Agent, gateway: Ipv4Addr) -> BTreeMap<String, String> {
    let extra = kinds::of(agent.kind).sandbox().proxy_env;
    if !agent.egress.uses_proxy() || extra.is_none() {
        return BTreeMap::new();
    }
    let mut direct = vec![*agent.matrix_address.ip()];
    direct.extend(agent.inference_address.map(|a| *a.ip()));
    egress::proxy_environment(gateway, &direct, extra)
}

/// Each credential's placeholder under its variable, and the appliance CA
/// among the certificates the sandbox trusts: the image's bundle stays
/// (`SSL_CERT_FILE`), Go and OpenSSL add the certificates of
/// `SSL_CERT_DIR` (the CA directory has OpenSSL's hash link), Node those
/// of `NODE_EXTRA_CA_CERTS`.
fn credential_environment(agent: &Agent) -> BTreeMap<String, String> {
    if agent.credentials.is_empty() {
        return BTreeMap::new();
    }
    let mut env: BTreeMap<String, String> = agent
        .credentials
        .iter()
        .map(|c| (c.variable.clone(), c.placeholder.clone()))
        .collect();
    env.insert("SSL_CERT_DIR".into(), credentials::CA_MOUNT.to_string());
    env.insert(
        "NODE_EXTRA_CA_CERTS".into(),
        format!("{}/ca.pem", credentials::CA_MOUNT),
    );
    env
}

/// Where `appliance-dind-start` waits for dockerd's socket, and the proxy
/// settings when code has a network (dockerd's own pulls honour them; the
/// code it runs may not, and the firewall holds either way).
fn exec_environment(agent: &Agent, gateway: Ipv4Addr) -> BTreeMap<String, String> {
    let mut env = BTreeMap::from([(
        "DOCKER_HOST".to_string(),
        format!("unix://{DOCKER_SOCKET_MOUNT}/{DOCKER_SOCKET_FILE}"),
    )]);
    if agent.code_network && agent.egress.uses_proxy() {
        env.extend(egress::proxy_environment(gateway, &[], None));
    }
    env
}

/// The image's tmpfs-backed writable directories; `code_storage` sizes the
/// inner Docker's storage (default 4g).
fn tmpfs_mounts(layout: &ImageLayout, code_storage: Option<Size>) -> Vec<Tmpfs> {
    layout
        .writable
        .iter()
        .filter_map(|writable| {
            let size = match writable.storage {
                Storage::Volume { .. } => return None,
                Storage::Tmpfs { size } => size,
                Storage::CodeStorage => code_storage.unwrap_or(Size::gib(4)),
            };
            let (uid, gid) = writable.owner_ids(&layout.account);
            Some(Tmpfs {
                target: writable.path.to_string(),
                size,
                mode: writable.mode_octal(),
                owner: (uid != 0 || gid != 0).then_some((uid, gid)),
                exec: writable.exec,
            })
        })
        .collect()
}

/// The host's generated resolv.conf, read-only over the sandbox's: it names
/// the DNS forwarder on the bridge address. `--dns` cannot do this: on a
/// user-defined network Docker writes `nameserver 127.0.0.11` (its embedded
/// resolver) whatever `--dns` says, and gVisor's netstack cannot reach that
/// resolver. Docker leaves a bind-mounted /etc/resolv.conf alone. Every
/// networked sandbox of `host` has it, agents' and services' alike.
pub fn resolver_bind(host: &str) -> Bind {
    Bind {
        source: BindSource::Generated(resolv_conf_path(host)),
        target: RESOLV_CONF.to_string(),
        read_only: true,
    }
}

/// Where in the generated tree a host's sandbox resolv.conf is.
pub fn resolv_conf_path(host: &str) -> String {
    format!("hosts/{host}/resolv.conf")
}

/// The Docker volume of an agent's image directory named `name`.
pub fn volume_name(agent: &str, name: &str) -> String {
    format!("appliance-{agent}-{name}")
}

/// The image's volume-backed writable directories, one named volume each.
fn volumes(layout: &ImageLayout, agent: &str) -> Vec<Volume> {
    layout
        .volumes()
        .map(|(name, writable)| Volume {
            name: volume_name(agent, name),
            target: writable.path.to_string(),
            read_only: false,
        })
        .collect()
}

fn format_cpus(cpus: f64) -> String {
    let text = format!("{cpus:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
