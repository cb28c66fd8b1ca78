//! `[agents.*]`: each agent's checks and defaults, its Matrix account and
//! allowlist, its endpoints and its policy (per-kind checks are in
//! `model::agent_checks`, the policy in `model::policy`, both asking the
//! agent's kind in `crate::generator::kinds`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;
use std::ops::Range;

use toml::Spanned;

use super::addressing::Endpoints;
use super::matrix::Accounts;
use super::{Builder, span};
use crate::generator::kinds;
use crate::generator::model::agent_checks::{check_limits, check_skill, resolve_model, resolve_tools};
use crate::generator::model::services::{
    EXTRACT_PORT, EXTRACT_SANDBOX, EXTRACT_SLOT, INFERENCE_SANDBOX, SEARCH_PORT, SEARCH_SANDBOX, SEARCH_SLOT,
};

/// Container names the appliance's own services take on every host.
const SERVICE_SANDBOXES: &[&str] = &[INFERENCE_SANDBOX, SEARCH_SANDBOX, EXTRACT_SANDBOX];
use crate::generator::model::{Agent, Host, MemberRole, Room, STATE_DIR, Subnet, policy, sandbox};
use crate::generator::spec::schema::{AgentKind, AgentSpec, Approval, CodeExecution, Target, Tool};

/// What the agents are resolved against: everything built before them.
pub(super) struct Context<'a> {
    pub hosts: &'a BTreeMap<String, Host>,
    pub accounts: &'a Accounts,
    pub models: &'a BTreeSet<String>,
    /// Which rooms each member is in, by user id.
    pub rooms_of: BTreeMap<String, Vec<&'a Room>>,
    pub endpoints: &'a Endpoints,
    pub network: Subnet,
    /// The spec runs a search backend for the `crawler` tool.
    pub search_backend: bool,
    /// The spec runs an extraction backend beside it.
    pub extract_backend: bool,
}

pub(super) fn resolve(b: &mut Builder, ctx: &Context) -> BTreeMap<String, Agent> {
    let spec = b.spec;
    let mut agents = BTreeMap::new();
    // Container names in use, so an agent's `<name>-exec` cannot clash.
    let mut sandbox_names: BTreeMap<String, Range<usize>> = BTreeMap::new();
    for (name, agent) in &spec.agents {
        if let Some(resolved) = resolve_agent(b, ctx, name, agent, &mut sandbox_names) {
            agents.insert(name.get_ref().clone(), resolved);
        }
    }
    agents
}

/// One agent; `None` when its host is unknown (already reported).
fn resolve_agent(
    b: &mut Builder,
    ctx: &Context,
    name: &Spanned<String>,
    agent: &AgentSpec,
    sandbox_names: &mut BTreeMap<String, Range<usize>>,
) -> Option<Agent> {
    b.check_account_name("agent", name);
    let host_ok = b.known_host(&format!("agent `{}`", name.get_ref()), &agent.host);
    let kind = *agent.kind.get_ref();
    let has_inference = b.spec.inference.is_some();
    let model = resolve_model(b, name, agent, has_inference, ctx.models);
    let context = context(b, name, agent, kind);
    let (tools, browser, code_execution) = resolve_tools(b, name, agent);
    let limits = check_limits(b, agent);
    check_flags(b, agent, kind, code_execution);
    for skill in &agent.skills {
        check_skill(b, kind, skill);
    }
    if host_ok {
        check_gpu(b, ctx, name, agent);
    }
    claim_sandbox_names(b, sandbox_names, name, code_execution.is_some());
    let approve = resolve_approve(b, ctx, name, agent, code_execution.is_some());
    if !host_ok {
        return None;
    }
    let host_name = agent.host.get_ref().clone();
    let user_id = format!("@{}:{}", name.get_ref(), ctx.accounts.server_name);
    let endpoints = ctx.endpoints;
    let homeserver_address = endpoints.address_from(&host_name, &endpoints.matrix_host);
    let inference_url = endpoints
        .inference_address_from(&host_name)
        .map(|address| format!("http://{address}:{}", endpoints.inference_port));
    let (rooms, allowed_users) = rooms_and_allowlist(ctx, &user_id);
    let skills: Vec<String> = agent.skills.iter().map(|s| s.get_ref().clone()).collect();
    let publish: Vec<u16> = agent.publish.iter().map(|p| *p.get_ref()).collect();
    let egress = crate::generator::model::egress::resolve(b, agent);
    let credentials = super::credentials::resolve(b, name, agent, &egress);
    let policy = policy::apply(policy::Request {
        name: name.get_ref(),
        kind,
        tools,
        skills: &skills,
        remote_exec: agent.remote_exec(),
        code_network: agent.code_network(),
        publish: &publish,
        search_backend: ctx.search_backend,
        extract_backend: ctx.extract_backend,
        egress_proxy: egress.uses_proxy(),
        proxy_credentials: credentials.iter().map(|c| c.variable.as_str()).collect(),
    });
    let (search_address, extract_address) = crawler_backends(ctx, policy.tools.contains(&Tool::Crawler));
    Some(Agent {
        name: name.get_ref().clone(),
        kind,
        host: host_name.clone(),
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
            "http://{}:{}",
            homeserver_address.unwrap_or(ctx.network.gateway()),
            endpoints.matrix_port
        ),
        inference_url,
        search_url: search_address.map(|a| format!("http://{a}")),
        search_address,
        extract_url: extract_address.map(|a| format!("http://{a}")),
        extract_address,
        matrix_address: SocketAddrV4::new(
            homeserver_address.unwrap_or(ctx.network.gateway()),
            endpoints.matrix_port,
        ),
        inference_address: endpoints
            .inference_address_from(&host_name)
            .map(|a| SocketAddrV4::new(a, endpoints.inference_port)),
        egress_proxy: egress
            .uses_proxy()
            .then(|| crate::generator::model::egress::proxy_url(ctx.network.gateway())),
        egress,
        grants: agent.grants.as_ref().is_none_or(|g| *g.get_ref()),
        approve,
        credentials,
        allowed_users,
        admins: ctx.accounts.admins.clone(),
        rooms,
        secrets_dir: format!("{STATE_DIR}/secrets/{}", name.get_ref()),
        sandbox: name.get_ref().clone(),
        device_id: crate::generator::model::device_id(name.get_ref()),
        permissive: policy.permissive,
        warnings: policy.warnings,
        limits,
    })
}

/// Where the `crawler` tool reaches its search and extraction backends
/// (on the agent's bridge), when the agent has the tool and the host runs
/// them.
fn crawler_backends(ctx: &Context, crawler: bool) -> (Option<SocketAddrV4>, Option<SocketAddrV4>) {
    let service = |slot: u32, port: u16| {
        let address = ctx
            .network
            .host(slot)
            .expect("every appliance subnet has the service slots");
        SocketAddrV4::new(address, port)
    };
    (
        (ctx.search_backend && crawler).then(|| service(SEARCH_SLOT, SEARCH_PORT)),
        (ctx.extract_backend && crawler).then(|| service(EXTRACT_SLOT, EXTRACT_PORT)),
    )
}

/// `approve` (docs/spec.md): strict by default, so an agent with code
/// execution runs code only after an admin's approval unless its spec says
/// `approve = []`. The warden that asks runs on the Matrix host, so only an
/// agent there can have it; an action the agent does not have is an error.
fn resolve_approve(
    b: &mut Builder,
    ctx: &Context,
    name: &Spanned<String>,
    agent: &AgentSpec,
    code_execution: bool,
) -> Vec<Approval> {
    let Some(listed) = &agent.approve else {
        return if code_execution {
            vec![Approval::CodeExecution]
        } else {
            Vec::new()
        };
    };
    let mut approve = BTreeSet::new();
    for action in listed.get_ref() {
        let Approval::CodeExecution = action.get_ref();
        if !code_execution {
            b.error(
                span(action),
                format!(
                    "agent `{}` has no code execution, so `approve = [\"code-execution\"]` has nothing to approve",
                    name.get_ref()
                ),
                "remove it from `approve`, or add `code-execution = \"docker-in-gvisor\"`",
            );
        } else if agent.host.get_ref() != &ctx.endpoints.matrix_host {
            b.error(
                span(action),
                format!(
                    "agent `{}` is on host `{}`, but the warden that asks the admins for approval runs on the Matrix host `{}`",
                    name.get_ref(),
                    agent.host.get_ref(),
                    ctx.endpoints.matrix_host
                ),
                "move the agent to the Matrix host, or set `approve = []` to let its code run without an admin's approval",
            );
        } else if !approve.insert(*action.get_ref()) {
            b.error(
                span(action),
                "`code-execution` is listed twice in `approve`",
                "list it once",
            );
        }
    }
    approve.into_iter().collect()
}

/// The context window: the spec's, or the kind's default.
fn context(b: &mut Builder, name: &Spanned<String>, agent: &AgentSpec, kind: AgentKind) -> u32 {
    let kind = kinds::of(kind);
    let supports = kind.supports();
    let context = agent
        .context
        .as_ref()
        .map_or(supports.default_context, |c| *c.get_ref());
    if let Some(zero) = agent.context.as_ref().filter(|c| *c.get_ref() == 0) {
        b.error(
            span(zero),
            format!(
                "agent `{}` has `context = 0`: a model with no context window can read nothing",
                name.get_ref()
            ),
            format!(
                "remove `context` for {}'s default of {} tokens, or give the model's window",
                kind.label(),
                supports.default_context
            ),
        );
        return context;
    }
    if let Some(min) = supports.min_context
        && context < min
    {
        let at = agent.context.as_ref().map_or(span(name), span);
        b.error(
            at,
            format!(
                "agent `{}` is {}, which needs a context window of at least {min} tokens",
                name.get_ref(),
                kind.label()
            ),
            format!("set `context = {}` or more", supports.default_context),
        );
    }
    context
}

/// Switches that only some agents can use.
fn check_flags(b: &mut Builder, agent: &AgentSpec, kind: AgentKind, code_execution: Option<CodeExecution>) {
    if let Some(flag) = agent
        .remote_exec
        .as_ref()
        .filter(|f| *f.get_ref() && !kinds::of(kind).supports().remote_exec)
    {
        b.error(
            span(flag),
            format!(
                "`remote-exec` applies to {} agents only",
                kinds::names_where(|k| k.supports().remote_exec)
            ),
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
}

/// `gpu = true` needs a host with a `gpu` table.
fn check_gpu(b: &mut Builder, ctx: &Context, name: &Spanned<String>, agent: &AgentSpec) {
    let Some(gpu_flag) = agent.gpu.as_ref().filter(|g| *g.get_ref()) else {
        return;
    };
    let host_name = agent.host.get_ref();
    let host = &ctx.hosts[host_name];
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

/// The agent's container names (`<name>`, and `<name>-exec` with code
/// execution) must be unique across the appliance.
fn claim_sandbox_names(
    b: &mut Builder,
    sandbox_names: &mut BTreeMap<String, Range<usize>>,
    name: &Spanned<String>,
    code_execution: bool,
) {
    let mut agent_sandboxes = vec![name.get_ref().clone()];
    if code_execution {
        agent_sandboxes.push(sandbox::exec_sandbox_name(name.get_ref()));
    }
    for sandbox in agent_sandboxes {
        // The appliance's own service sandboxes share the container names.
        if SERVICE_SANDBOXES.contains(&sandbox.as_str()) {
            b.error(
                span(name),
                format!("container name `{sandbox}` is the appliance's own service sandbox"),
                "rename the agent: `ollama`, `searxng` and `webextract` are the appliance's service sandboxes",
            );
            continue;
        }
        if let Some(_previous) = sandbox_names.insert(sandbox.clone(), span(name)) {
            b.error(
                span(name),
                format!("container name `{sandbox}` is used twice"),
                "an agent with code execution also runs `<name>-exec`; rename one of the agents",
            );
        }
    }
}

/// The rooms the agent joins, and whom it answers: the admins and the
/// human members of its rooms, never an agent. That is the loop guard:
/// agents that mention each other cannot ping-pong; one human message gets
/// at most one answer from each agent it mentions (docs/agents.md).
fn rooms_and_allowlist(ctx: &Context, user_id: &str) -> (Vec<String>, Vec<String>) {
    let mut rooms = Vec::new();
    let mut allowed: BTreeSet<String> = ctx.accounts.admins.iter().cloned().collect();
    for room in ctx.rooms_of.get(user_id).into_iter().flatten() {
        rooms.push(room.alias.clone());
        allowed.extend(
            room.members
                .iter()
                .filter(|m| m.role != MemberRole::Agent)
                .map(|m| m.user_id.clone()),
        );
    }
    allowed.remove(user_id);
    (rooms, allowed.into_iter().collect())
}
