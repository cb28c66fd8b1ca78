//! Spec to model: check every name and cross-reference, resolve defaults.
//! All problems are collected, so one run reports every error in a spec.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

use toml::Spanned;

use super::agent_checks::{check_limits, check_skill, default_context, resolve_model, resolve_tools};
use super::names::{model_problem, name_problem, server_name_problem, suggest};
use super::network::Subnet;
use super::policy;
use super::sandbox::{self, SandboxInputs};
use super::{Agent, Appliance, Gpu, Host, Inference, Matrix, MemberRole, Room, RoomMember, STATE_DIR};
use crate::diag::{Diagnostic, SourceFile, SpecErrors};
use crate::runsc::Profile;
use crate::spec::Spec;
use crate::spec::schema::{AgentKind, AgentSpec, DriverCapability, Platform, System, Target};

const DEFAULT_NETWORK: &str = "10.88.0.0/16";
const DEFAULT_OVERLAY: &str = "10.89.0.0/24";
const MATRIX_PORT: u16 = 8008;
const OLLAMA_PORT: u16 = 11434;
pub const SSH_PORT: u16 = 22;
/// The DNS forwarder the sandboxes use, on the bridge address.
pub const DNS_PORT: u16 = 53;
pub const WIREGUARD_PORT: u16 = 51820;
/// Hermes refuses models with a smaller context window.
const HERMES_MIN_CONTEXT: u32 = 64_000;

/// Ports claimed on one host: (protocol, port) -> who, and where in the spec.
type PortClaims = BTreeMap<(&'static str, u16), (String, Range<usize>)>;

fn span<T>(value: &Spanned<T>) -> Range<usize> {
    value.span()
}

pub(super) struct Builder<'a> {
    pub(super) spec: &'a Spec,
    diagnostics: Vec<Diagnostic>,
}

impl Builder<'_> {
    pub(super) fn error(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        self.diagnostics.push(Diagnostic::new(span, message).hint(hint));
    }

    /// Matrix accounts must not take the bootstrap account's name.
    fn check_account_name(&mut self, what: &str, name: &Spanned<String>) {
        self.check_name(what, name);
        if name.get_ref() == crate::bootstrap::plan::BOOTSTRAP_LOCALPART {
            self.error(
                span(name),
                format!(
                    "{what} name `{}` is reserved for the account that bootstraps the homeserver",
                    name.get_ref()
                ),
                "choose another name",
            );
        }
    }

    fn check_name(&mut self, what: &str, name: &Spanned<String>) {
        if let Some(problem) = name_problem(name.get_ref()) {
            let message = format!("{what} name `{}` {problem}", name.get_ref());
            let hint = format!(
                "names become Matrix users, containers, systemd units and file names; try `{}`",
                suggest(name.get_ref())
            );
            self.error(span(name), message, hint);
        }
    }

    fn known_host(&mut self, what: &str, host: &Spanned<String>) -> bool {
        if self.spec.hosts.keys().any(|h| h.get_ref() == host.get_ref()) {
            return true;
        }
        let known: Vec<String> = self.spec.hosts.keys().map(|h| format!("`{}`", h.get_ref())).collect();
        let hint = if known.is_empty() {
            format!("declare it as `[hosts.{}]`", host.get_ref())
        } else {
            format!(
                "use one of {} or declare `[hosts.{}]`",
                known.join(", "),
                host.get_ref()
            )
        };
        self.error(
            span(host),
            format!("{what} is on unknown host `{}`", host.get_ref()),
            hint,
        );
        false
    }
}

/// Validates a parsed spec and resolves it into an [`Appliance`].
pub fn build(source: &SourceFile, spec: &Spec) -> Result<Appliance, SpecErrors> {
    let mut b = Builder {
        spec,
        diagnostics: Vec::new(),
    };

    b.check_name("appliance", &spec.appliance.name);
    let lint_allow = super::allow::resolve(&mut b);
    let network = subnet(&mut b, spec.appliance.network.as_ref(), DEFAULT_NETWORK);
    let multi_host = {
        let mut used: BTreeSet<&str> = spec.agents.values().map(|a| a.host.get_ref().as_str()).collect();
        used.insert(spec.matrix.get_ref().host.get_ref());
        if let Some(inference) = &spec.inference {
            used.insert(inference.get_ref().host.get_ref());
        }
        used.len() > 1
    };
    // Parsed even for one host, so a bad value is reported before it is used.
    let overlay_subnet = subnet(&mut b, spec.appliance.overlay.as_ref(), DEFAULT_OVERLAY);
    let overlay = multi_host.then_some(overlay_subnet);
    if let Some(overlay) = &overlay
        && overlaps(&network, overlay)
    {
        let (at, hint) = match (&spec.appliance.overlay, &spec.appliance.network) {
            (Some(text), _) => (span(text), "pick two disjoint private ranges".to_string()),
            (None, Some(text)) => (
                span(text),
                format!("the overlay defaults to `{DEFAULT_OVERLAY}`; pick another `network` or set `overlay`"),
            ),
            (None, None) => (
                span(&spec.appliance.name),
                "set `overlay` to another private range".to_string(),
            ),
        };
        b.error(
            at,
            format!("overlay `{overlay}` overlaps the appliance network `{network}`"),
            hint,
        );
    }

    if spec.hosts.is_empty() {
        b.error(
            span(&spec.appliance.name),
            "the spec declares no host",
            "add a host such as `[hosts.hub]` with `target = \"gce\"`",
        );
    }

    let mut hosts = BTreeMap::new();
    for (index, (name, host)) in spec.hosts.iter().enumerate() {
        b.check_name("host", name);
        let target = *host.target.get_ref();
        let system = match (target, &host.system) {
            (Target::Gce, None) => System::X86_64Linux,
            (Target::Rpi4, None) => System::Aarch64Linux,
            (Target::Nixos, None) => System::X86_64Linux,
            (Target::Nixos, Some(system)) => *system.get_ref(),
            (_, Some(system)) => {
                b.error(
                    span(system),
                    format!("host `{}` sets `system`, but its target fixes it", name.get_ref()),
                    "remove `system`; only `target = \"nixos\"` hosts choose their system",
                );
                *system.get_ref()
            }
        };
        let gpu = host.gpu.as_ref().and_then(|gpu| {
            if target == Target::Rpi4 {
                b.error(
                    span(gpu),
                    format!(
                        "host `{}` is a Raspberry Pi 4, which has no GPU gVisor can pass through",
                        name.get_ref()
                    ),
                    "remove `gpu`; serve models from a GPU host and let the Pi's agents use it over the overlay",
                );
                return None;
            }
            let gpu = gpu.get_ref();
            if *gpu.count.get_ref() == 0 {
                b.error(
                    span(&gpu.count),
                    "GPU count is 0",
                    "remove `gpu` or give a count of at least 1",
                );
            }
            let mut capabilities: Vec<DriverCapability> = match &gpu.driver_capabilities {
                Some(list) if list.is_empty() => {
                    b.error(
                        span(&gpu.count),
                        "`driver-capabilities` is empty, so no GPU work could run",
                        "remove `driver-capabilities` for the default (compute, utility), or list what is needed",
                    );
                    Vec::new()
                }
                Some(list) => list.iter().map(|c| *c.get_ref()).collect(),
                None => vec![DriverCapability::Compute, DriverCapability::Utility],
            };
            capabilities.sort();
            capabilities.dedup();
            Some(Gpu {
                vendor: "nvidia".into(),
                model: gpu.model.get_ref().clone(),
                count: *gpu.count.get_ref(),
                driver_capabilities: capabilities,
            })
        });
        for key in &host.ssh_keys {
            let text = key.get_ref();
            let known = [
                "ssh-ed25519 ",
                "ssh-rsa ",
                "ecdsa-sha2-",
                "sk-ssh-ed25519@",
                "sk-ecdsa-sha2-",
            ];
            if !known.iter().any(|prefix| text.starts_with(prefix)) || text.contains('\n') {
                b.error(
                    span(key),
                    "this is not an SSH public key",
                    "paste one line of `~/.ssh/id_ed25519.pub`, e.g. `ssh-ed25519 AAAA... you@laptop`",
                );
            }
        }
        if let Some(key) = &host.wireguard_public_key
            && !is_wireguard_key(key.get_ref())
        {
            b.error(
                span(key),
                "this is not a WireGuard public key",
                "use the 44-character base64 key that `wg pubkey` prints on that host",
            );
        }
        let overlay_address = overlay.and_then(|o| o.host(index as u32 + 1));
        if let Some(overlay) = overlay.filter(|_| overlay_address.is_none()) {
            let at = spec.appliance.overlay.as_ref().map_or_else(|| span(name), span);
            b.error(
                at,
                format!(
                    "the overlay `{overlay}` has no address left for host `{}`",
                    name.get_ref()
                ),
                "use a larger subnet in `[appliance].overlay`",
            );
        }
        hosts.insert(
            name.get_ref().clone(),
            Host {
                name: name.get_ref().clone(),
                target,
                system,
                platform: host.platform.as_ref().map_or(Platform::Systrap, |p| *p.get_ref()),
                gpu,
                ssh_keys: host.ssh_keys.iter().map(|k| k.get_ref().clone()).collect(),
                network_address: network.gateway(),
                overlay_address,
                wireguard_public_key: host.wireguard_public_key.as_ref().map(|k| k.get_ref().clone()),
                endpoint: host.endpoint.as_ref().map(|e| e.get_ref().clone()),
                firewall: Vec::new(),
                runtimes: Vec::new(),
                sandboxes: Vec::new(),
                runs_matrix: false,
                runs_inference: false,
            },
        );
    }

    // Lookups by name, so large specs stay linear.
    let agent_names: BTreeSet<&str> = spec.agents.keys().map(|a| a.get_ref().as_str()).collect();
    let agent_specs: BTreeMap<&str, &AgentSpec> = spec.agents.iter().map(|(n, a)| (n.get_ref().as_str(), a)).collect();

    // Matrix.
    let matrix_spec = spec.matrix.get_ref();
    b.known_host("the Matrix homeserver", &matrix_spec.host);
    if let Some(problem) = server_name_problem(matrix_spec.server_name.get_ref()) {
        b.error(
            span(&matrix_spec.server_name),
            format!("server name `{}` {problem}", matrix_spec.server_name.get_ref()),
            "user ids become `@agent:<server-name>`; it cannot change after first boot",
        );
    }
    let server_name = matrix_spec.server_name.get_ref().clone();
    let mut admins = Vec::new();
    let mut seen_admins = BTreeSet::new();
    for admin in &matrix_spec.admins {
        b.check_account_name("admin", admin);
        if !seen_admins.insert(admin.get_ref().clone()) {
            b.error(
                span(admin),
                format!("admin `{}` is listed twice", admin.get_ref()),
                "remove the duplicate",
            );
        }
        if agent_names.contains(admin.get_ref().as_str()) {
            b.error(
                span(admin),
                format!("`{}` is both an admin and an agent", admin.get_ref()),
                "humans and agents need distinct Matrix accounts; rename one",
            );
        }
        admins.push(format!("@{}:{server_name}", admin.get_ref()));
    }

    // Inference.
    let inference_spec = spec.inference.as_ref().map(|i| i.get_ref());
    let mut models = BTreeSet::new();
    if let Some(inference) = inference_spec {
        b.known_host("inference", &inference.host);
        if inference.models.is_empty() {
            b.error(
                span(spec.inference.as_ref().expect("inference present")),
                "inference serves no model",
                "list at least one Ollama model in `models`",
            );
        }
        for model in &inference.models {
            if let Some(problem) = model_problem(model.get_ref()) {
                b.error(
                    span(model),
                    format!("model `{}` {problem}", model.get_ref()),
                    "copy the name from `ollama list`",
                );
            }
            if !models.insert(model.get_ref().clone()) {
                b.error(
                    span(model),
                    format!("model `{}` is listed twice", model.get_ref()),
                    "remove the duplicate",
                );
            }
        }
    }

    // Rooms: who is in which room, needed by the agents' allowlists.
    let mut rooms = BTreeMap::new();
    for (name, room) in &spec.rooms {
        b.check_name("room", name);
        if room.members.is_empty() {
            b.error(
                span(name),
                format!("room `{}` has no members", name.get_ref()),
                "list agents and `@admins` in `members`",
            );
        }
        let federate = room.federate.as_ref().is_some_and(|f| *f.get_ref());
        if let Some(flag) = room.federate.as_ref().filter(|_| federate && !matrix_spec.federation) {
            b.error(
                span(flag),
                format!(
                    "room `{}` federates, but the homeserver has federation off",
                    name.get_ref()
                ),
                "set `federation = true` under `[matrix]`, or remove `federate`",
            );
        }
        let mut members = Vec::new();
        let mut seen = BTreeSet::new();
        for member in &room.members {
            let text = member.get_ref();
            if !seen.insert(text.clone()) {
                b.error(
                    span(member),
                    format!("`{text}` is listed twice in room `{}`", name.get_ref()),
                    "remove the duplicate",
                );
                continue;
            }
            if text.is_empty() || text == "@" {
                b.error(
                    span(member),
                    format!("room `{}` lists an empty member", name.get_ref()),
                    "write an agent name, or `@name` for an admin",
                );
                continue;
            }
            if let Some(admin) = text.strip_prefix('@') {
                if !seen_admins.contains(admin) {
                    b.error(
                        span(member),
                        format!("unknown room member `{text}`: no admin `{admin}` in `[matrix].admins`"),
                        format!("add \"{admin}\" to `admins` under `[matrix]`, or remove it from the room"),
                    );
                }
                members.push(RoomMember {
                    user_id: format!("@{admin}:{server_name}"),
                    role: MemberRole::Admin,
                    power_level: 100,
                });
            } else if agent_names.contains(text.as_str()) {
                members.push(RoomMember {
                    user_id: format!("@{text}:{server_name}"),
                    role: MemberRole::Agent,
                    power_level: 0,
                });
            } else {
                b.error(
                    span(member),
                    format!("unknown room member `{text}`: no agent has that name"),
                    format!("declare `[agents.{text}]`, or write `@{text}` for a human admin"),
                );
            }
        }
        let name = name.get_ref().clone();
        rooms.insert(
            name.clone(),
            Room {
                alias: format!("#{name}:{server_name}"),
                display_name: room.name.as_ref().map_or_else(|| name.clone(), |n| n.get_ref().clone()),
                topic: room.topic.as_ref().map(|t| t.get_ref().clone()),
                federate,
                members,
                name,
            },
        );
    }

    // Endpoints as a sandbox on a given host sees them.
    let matrix_host = matrix_spec.host.get_ref().clone();
    let matrix_port = matrix_spec.port.as_ref().map_or(MATRIX_PORT, |p| *p.get_ref());
    let inference_host = inference_spec.map(|i| i.host.get_ref().clone());
    let inference_port = inference_spec
        .and_then(|i| i.port.as_ref())
        .map_or(OLLAMA_PORT, |p| *p.get_ref());
    // Ollama takes one listen address: the overlay address when agents on
    // other hosts use it (local sandboxes reach it through the bridge, as a
    // local address of the host), the bridge address otherwise. Every agent
    // uses that one address.
    let remote_inference = inference_host
        .as_ref()
        .is_some_and(|ih| spec.agents.values().any(|a| a.host.get_ref() != ih));
    let inference_address = inference_host.as_ref().and_then(|ih| hosts.get(ih)).map(|host| {
        if remote_inference {
            host.overlay_address.unwrap_or(network.gateway())
        } else {
            network.gateway()
        }
    });
    let address_from = |from: &str, to: &str| -> Option<Ipv4Addr> {
        if from == to {
            Some(network.gateway())
        } else {
            hosts.get(to).and_then(|h| h.overlay_address)
        }
    };

    // Which rooms each member is in, for the agents' allowlists.
    let mut rooms_of: BTreeMap<String, Vec<&Room>> = BTreeMap::new();
    for room in rooms.values() {
        for member in &room.members {
            rooms_of.entry(member.user_id.clone()).or_default().push(room);
        }
    }

    // Agents.
    let mut agents = BTreeMap::new();
    let mut sandbox_names: BTreeMap<String, Range<usize>> = BTreeMap::new();
    for (name, agent) in &spec.agents {
        b.check_account_name("agent", name);
        let host_ok = b.known_host(&format!("agent `{}`", name.get_ref()), &agent.host);
        let kind = *agent.kind.get_ref();
        let model = resolve_model(&mut b, name, agent, inference_spec.is_some(), &models);
        let context = agent.context.as_ref().map_or(default_context(kind), |c| *c.get_ref());
        if kind == AgentKind::Hermes && context < HERMES_MIN_CONTEXT {
            let at = agent.context.as_ref().map_or(span(name), span);
            b.error(
                at,
                format!(
                    "agent `{}` is Hermes, which needs a context window of at least {HERMES_MIN_CONTEXT} tokens",
                    name.get_ref()
                ),
                "set `context = 65536` or more",
            );
        }
        let (tools, browser, code_execution) = resolve_tools(&mut b, name, agent);
        check_limits(&mut b, agent);
        if let Some(flag) = agent
            .remote_exec
            .as_ref()
            .filter(|f| *f.get_ref() && kind != AgentKind::Picoclaw)
        {
            b.error(
                span(flag),
                "`remote-exec` applies to picoclaw agents only",
                "remove `remote-exec`",
            );
        }
        if let Some(flag) = agent
            .code_network
            .as_ref()
            .filter(|f| *f.get_ref() && code_execution.is_none())
        {
            b.error(
                span(flag),
                "`code-network` is set but the agent has no code execution",
                "remove `code-network`",
            );
        }
        for skill in &agent.skills {
            check_skill(&mut b, kind, skill);
        }
        let host_name = agent.host.get_ref().clone();
        if let Some(gpu_flag) = agent.gpu.as_ref().filter(|g| *g.get_ref() && host_ok) {
            let host = &hosts[&host_name];
            if host.gpu.is_none() {
                let why = if host.target == Target::Rpi4 {
                    "a Raspberry Pi 4 has no GPU gVisor can use"
                } else {
                    "the host declares no `gpu`"
                };
                b.error(
                    span(gpu_flag),
                    format!(
                        "agent `{}` asks for a GPU on host `{host_name}`, but {why}",
                        name.get_ref()
                    ),
                    "remove `gpu = true`, or move the agent to a host with a `gpu` table",
                );
            }
        }
        let mut agent_sandboxes = vec![name.get_ref().clone()];
        if code_execution.is_some() {
            agent_sandboxes.push(sandbox::exec_sandbox_name(name.get_ref()));
        }
        for sandbox in agent_sandboxes {
            if let Some(_previous) = sandbox_names.insert(sandbox.clone(), span(name)) {
                b.error(
                    span(name),
                    format!("container name `{sandbox}` is used twice"),
                    "an agent with code execution also runs `<name>-exec`; rename one of the agents",
                );
            }
        }
        if !host_ok {
            continue;
        }
        let user_id = format!("@{}:{server_name}", name.get_ref());
        let homeserver_address = address_from(&host_name, &matrix_host);
        let inference_url = inference_address.map(|address| format!("http://{address}:{inference_port}"));
        let egress = super::egress::resolve(&mut b, agent);
        let mut agent_rooms = Vec::new();
        let mut allowed: BTreeSet<String> = admins.iter().cloned().collect();
        for room in rooms_of.get(user_id.as_str()).into_iter().flatten() {
            agent_rooms.push(room.alias.clone());
            allowed.extend(room.members.iter().map(|m| m.user_id.clone()));
        }
        allowed.remove(&user_id);
        let skills: Vec<String> = agent.skills.iter().map(|s| s.get_ref().clone()).collect();
        let publish: Vec<u16> = agent.publish.iter().map(|p| *p.get_ref()).collect();
        let policy = policy::apply(policy::Request {
            name: name.get_ref(),
            kind,
            tools,
            skills: &skills,
            remote_exec: agent.remote_exec(),
            code_network: agent.code_network(),
            publish: &publish,
            egress_proxy: egress.uses_proxy(),
        });
        agents.insert(
            name.get_ref().clone(),
            Agent {
                name: name.get_ref().clone(),
                kind,
                host: host_name,
                user_id,
                model,
                context,
                tools: policy.tools,
                skills,
                browser,
                code_execution,
                remote_exec: agent.remote_exec(),
                code_network: agent.code_network(),
                homeserver_url: format!(
                    "http://{}:{matrix_port}",
                    homeserver_address.unwrap_or(network.gateway())
                ),
                inference_url,
                matrix_address: SocketAddrV4::new(homeserver_address.unwrap_or(network.gateway()), matrix_port),
                inference_address: inference_address.map(|a| SocketAddrV4::new(a, inference_port)),
                egress_proxy: egress.uses_proxy().then(|| super::egress::proxy_url(network.gateway())),
                egress,
                allowed_users: allowed.into_iter().collect(),
                rooms: agent_rooms,
                secrets_dir: format!("{STATE_DIR}/secrets/{}", name.get_ref()),
                sandbox: name.get_ref().clone(),
                device_id: super::device_id(name.get_ref()),
                permissive: policy.permissive,
                warnings: policy.warnings,
            },
        );
    }

    // Which host serves what, and which firewall holes that needs.
    let remote_matrix = agents.values().any(|a| a.host != matrix_host);
    // Host ports by protocol: a TCP service and WireGuard's UDP port do not clash.
    let mut ports: BTreeMap<String, PortClaims> = BTreeMap::new();
    let mut claim = |b: &mut Builder, host: &str, protocol: &'static str, port: u16, what: String, at: Range<usize>| {
        let host_ports = ports.entry(host.to_string()).or_default();
        if let Some((other, _)) = host_ports.get(&(protocol, port)) {
            b.error(
                at,
                format!("{protocol} port {port} on host `{host}` is used by both {other} and {what}"),
                "give one of them another port",
            );
        } else {
            host_ports.insert((protocol, port), (what, at));
        }
    };
    let appliance_span = span(&spec.appliance.name);
    let hosts_with_agents: BTreeSet<&str> = spec.agents.values().map(|a| a.host.get_ref().as_str()).collect();
    for host in hosts.values() {
        claim(
            &mut b,
            &host.name,
            "tcp",
            SSH_PORT,
            "SSH".into(),
            appliance_span.clone(),
        );
        if overlay.is_some() {
            claim(
                &mut b,
                &host.name,
                "udp",
                WIREGUARD_PORT,
                "WireGuard".into(),
                appliance_span.clone(),
            );
        }
        if agents.values().any(|a| a.host == host.name && a.egress.uses_proxy()) {
            claim(
                &mut b,
                &host.name,
                "tcp",
                super::egress::PROXY_PORT,
                "the sandboxes' egress proxy".into(),
                appliance_span.clone(),
            );
        }
        if hosts_with_agents.contains(host.name.as_str()) {
            claim(
                &mut b,
                &host.name,
                "tcp",
                DNS_PORT,
                "the sandboxes' DNS forwarder".into(),
                appliance_span.clone(),
            );
        }
    }
    let matrix_at = matrix_spec.port.as_ref().map_or_else(|| span(&matrix_spec.host), span);
    if hosts.contains_key(&matrix_host) {
        claim(
            &mut b,
            &matrix_host,
            "tcp",
            matrix_port,
            "the Matrix homeserver".into(),
            matrix_at,
        );
    }
    if let (Some(inference), Some(host)) = (inference_spec, &inference_host) {
        let at = inference.port.as_ref().map_or_else(|| span(&inference.host), span);
        if hosts.contains_key(host) {
            claim(&mut b, host, "tcp", inference_port, "Ollama".into(), at);
        }
    }
    for (name, agent) in &spec.agents {
        if let Some(port) = agent.publish.first()
            && *agent.kind.get_ref() != AgentKind::Openclaw
        {
            b.error(
                span(port),
                format!(
                    "agent `{}` has no gateway to publish: only OpenClaw serves one (its control UI)",
                    name.get_ref()
                ),
                "remove `publish`",
            );
        }
        for port in &agent.publish {
            if *port.get_ref() == 0 {
                b.error(
                    span(port),
                    "port 0 cannot be published",
                    "use a port between 1 and 65535",
                );
                continue;
            }
            if hosts.contains_key(agent.host.get_ref()) {
                claim(
                    &mut b,
                    agent.host.get_ref(),
                    "tcp",
                    *port.get_ref(),
                    format!("agent `{}`", name.get_ref()),
                    span(port),
                );
            }
        }
    }

    let matrix = Matrix {
        host: matrix_host.clone(),
        server_name,
        port: matrix_port,
        federation: matrix_spec.federation,
        admins,
        bind_addresses: {
            let mut addresses = vec![Ipv4Addr::LOCALHOST, network.gateway()];
            if remote_matrix {
                addresses.extend(hosts.get(&matrix_host).and_then(|h| h.overlay_address));
            }
            addresses
        },
    };
    let inference = inference_spec.and_then(|spec_inference| {
        let host = hosts.get(spec_inference.host.get_ref())?;
        Some(Inference {
            host: host.name.clone(),
            port: inference_port,
            models: spec_inference.models.iter().map(|m| m.get_ref().clone()).collect(),
            acceleration: if host.gpu.is_some() {
                "cuda".into()
            } else {
                "cpu".into()
            },
            bind_address: inference_address.unwrap_or(network.gateway()),
        })
    });

    if !b.diagnostics.is_empty() {
        return Err(SpecErrors::new(source, b.diagnostics));
    }

    // Sandboxes, addresses and runtimes, now that every reference is valid.
    let mut next_address: BTreeMap<String, u32> = BTreeMap::new();
    for agent in agents.values() {
        let host = hosts.get_mut(&agent.host).expect("agent host checked");
        let spec_agent = agent_specs[agent.name.as_str()];
        let counter = next_address.entry(host.name.clone()).or_insert(10);
        let sandboxes = sandbox::for_agent(&SandboxInputs {
            agent,
            spec: spec_agent,
            network: &network,
            gpu: host.gpu.as_ref(),
        });
        for mut sandbox in sandboxes {
            if let Some(network_slot) = sandbox.network.as_mut() {
                match network.host(*counter) {
                    Some(address) => network_slot.address = address,
                    None => {
                        let at = spec
                            .appliance
                            .network
                            .as_ref()
                            .map_or_else(|| span(&spec.appliance.name), span);
                        b.error(
                            at,
                            format!(
                                "the appliance network `{network}` has no address left for sandbox `{}`",
                                sandbox.name
                            ),
                            "use a larger subnet in `[appliance].network`",
                        );
                    }
                }
                *counter += 1;
            }
            host.sandboxes.push(sandbox);
        }
    }
    if !b.diagnostics.is_empty() {
        return Err(SpecErrors::new(source, b.diagnostics));
    }

    for host in hosts.values_mut() {
        host.runs_matrix = host.name == matrix_host;
        host.runs_inference = inference_host.as_deref() == Some(host.name.as_str());
        // The strict runtime is always there: it is Docker's default.
        let mut profiles: BTreeSet<Profile> = BTreeSet::from([Profile::STRICT]);
        for sandbox in &host.sandboxes {
            profiles.insert(sandbox.profile.clone());
        }
        host.runtimes = profiles.into_iter().collect();
        host.firewall = super::firewall::rules(host, &matrix, inference.as_ref(), overlay.is_some());
    }

    Ok(Appliance {
        name: spec.appliance.name.get_ref().clone(),
        network,
        overlay,
        hosts,
        matrix,
        inference,
        agents,
        rooms,
        lint_allow,
    })
}

fn subnet(b: &mut Builder, text: Option<&Spanned<String>>, default: &str) -> Subnet {
    match text {
        None => Subnet::parse(default).expect("default subnet is valid"),
        Some(text) => Subnet::parse(text.get_ref()).unwrap_or_else(|problem| {
            b.error(span(text), problem, "use a private IPv4 range such as `10.88.0.0/16`");
            Subnet::parse(default).expect("default subnet is valid")
        }),
    }
}

fn overlaps(a: &Subnet, b: &Subnet) -> bool {
    let end = |s: &Subnet| u32::from(s.base) + (s.size() - 1);
    u32::from(a.base) <= end(b) && u32::from(b.base) <= end(a)
}

fn is_wireguard_key(key: &str) -> bool {
    key.len() == 44
        && key.ends_with('=')
        && key[..43]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}
