//! `bootstrap/plan.json`: the bootstrap plan (schema in
//! `crate::schema::plan`) built from the model.

use std::collections::BTreeMap;

use crate::generator::kinds;
use crate::generator::model::{
    Agent, Appliance, DOCKER_SOCKET_FILE, Egress, MemberRole, PROXY_ACCESS_LOG, Room, SOCKET_DIR, STATE_DIR, Sandbox,
    approval_socket_dir, device_id, exec_sandbox_name, volume_name,
};
use crate::generator::spec::schema::Approval;
use crate::schema::plan::{
    Account, AccountKind, BOOTSTRAP_LOCALPART, BootstrapAccount, CodeApproval, EgressGrants, GrantTimes, HOST_SECRETS,
    Homeserver, OPS_ROOM_LOCALPART, PLAN_SCHEMA, Plan, PlannedRoom, PlannedSandbox, RateLimit, ToolLog,
    synapse_secrets,
};

/// The plan for an appliance; only its Matrix host runs it.
pub fn plan(appliance: &Appliance) -> Plan {
    let server_name = &appliance.matrix.server_name;
    let sandboxes: BTreeMap<&str, &Sandbox> = appliance
        .hosts
        .values()
        .flat_map(|host| &host.sandboxes)
        .map(|sandbox| (sandbox.name.as_str(), sandbox))
        .collect();
    let agents = appliance
        .agents
        .values()
        .map(|agent| agent_account(appliance, agent, sandboxes.get(agent.sandbox.as_str()).copied()));
    let admins = appliance.matrix.admins.iter().map(|admin| admin_account(admin));
    let matrix_host = appliance.hosts.get(&appliance.matrix.host);
    Plan {
        schema: PLAN_SCHEMA,
        appliance: appliance.name.clone(),
        homeserver: Homeserver {
            url: format!("http://127.0.0.1:{}", appliance.matrix.port),
            server_name: server_name.clone(),
        },
        state_dir: STATE_DIR.to_string(),
        synapse: synapse_secrets(),
        bootstrap_account: BootstrapAccount {
            localpart: BOOTSTRAP_LOCALPART.to_string(),
            user_id: format!("@{BOOTSTRAP_LOCALPART}:{server_name}"),
            device_id: device_id(BOOTSTRAP_LOCALPART),
            secrets_dir: format!("{HOST_SECRETS}/bootstrap"),
        },
        accounts: agents.chain(admins).collect(),
        rooms: appliance.rooms.values().map(planned_room).collect(),
        ops_room: ops_room(appliance),
        loop_budget: Some(appliance.matrix.loop_budget),
        sandboxes: matrix_host
            .iter()
            .flat_map(|host| &host.sandboxes)
            .map(|s| PlannedSandbox {
                name: s.name.clone(),
                address: s.network.as_ref().map(|n| n.address.to_string()),
            })
            .collect(),
        proxy_log: matrix_host
            .filter(|host| {
                host.sandboxes
                    .iter()
                    .any(|s| s.network.is_some() && s.egress.uses_proxy())
            })
            .map(|_| PROXY_ACCESS_LOG.to_string()),
        grants: Some(GrantTimes {
            default_secs: appliance.matrix.grant_default,
            max_secs: appliance.matrix.grant_max,
        }),
    }
}

/// An agent's account: its secrets, the env names its kind reads, its rate
/// limit, where it records its tool calls and whether `!allow` can widen
/// its egress.
fn agent_account(appliance: &Appliance, agent: &Agent, sandbox: Option<&Sandbox>) -> Account {
    let (uid, gid) = sandbox.and_then(|s| parse_user(&s.user)).unwrap_or((0, 0));
    let kind = kinds::of(agent.kind);
    let env = kind.plan();
    let names = |vars: &[&str]| vars.iter().map(|v| v.to_string()).collect();
    let (messages_per_second, burst_count) = env.rate_limit();
    Account {
        localpart: agent.name.clone(),
        user_id: agent.user_id.clone(),
        kind: AccountKind::Agent,
        display_name: agent.name.clone(),
        device_id: device_id(&agent.name),
        secrets_dir: relative(&agent.secrets_dir),
        uid,
        gid,
        generated_env: env.generated_env.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
        token_env: names(env.token_env),
        room_ids_env: names(env.room_ids_env),
        home_room_env: names(env.home_room_env),
        operator_env: names(&agent.operator_env()),
        rate_limit: Some(RateLimit {
            messages_per_second,
            burst_count,
        }),
        // The warden reads it on the Matrix host, where it runs.
        tool_log: sandbox
            .filter(|_| agent.host == appliance.matrix.host)
            .and_then(|sandbox| {
                let (format, volume, path) = env.tool_log;
                let volume = volume_name(&agent.name, volume);
                sandbox.volumes.iter().any(|v| v.name == volume).then(|| ToolLog {
                    format,
                    volume,
                    path: path.to_string(),
                })
            }),
        egress_grants: Some(egress_grants(appliance, agent, sandbox)),
        code_approval: code_approval(agent),
    }
}

/// The broker's sockets for an agent whose code waits for approval (the
/// model put it on the Matrix host, where the warden runs).
fn code_approval(agent: &Agent) -> Option<CodeApproval> {
    if !agent.approve.contains(&Approval::CodeExecution) {
        return None;
    }
    let sandbox = exec_sandbox_name(&agent.name);
    Some(CodeApproval {
        socket: format!("{}/{DOCKER_SOCKET_FILE}", approval_socket_dir(&sandbox)),
        upstream: format!("{SOCKET_DIR}/{sandbox}/{DOCKER_SOCKET_FILE}"),
        sandbox,
    })
}

/// A human admin's account: an initial password for the operator, nothing
/// an agent gets.
fn admin_account(admin: &str) -> Account {
    let localpart = admin
        .trim_start_matches('@')
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string();
    Account {
        user_id: admin.to_string(),
        kind: AccountKind::Admin,
        display_name: localpart.clone(),
        device_id: device_id(&localpart),
        secrets_dir: format!("{HOST_SECRETS}/admins/{localpart}"),
        uid: 0,
        gid: 0,
        generated_env: BTreeMap::new(),
        token_env: Vec::new(),
        room_ids_env: Vec::new(),
        home_room_env: Vec::new(),
        operator_env: Vec::new(),
        rate_limit: None,
        tool_log: None,
        egress_grants: None,
        code_approval: None,
        localpart,
    }
}

/// A spec room; its admins get their power levels.
fn planned_room(room: &Room) -> PlannedRoom {
    PlannedRoom {
        alias_localpart: room.name.clone(),
        alias: room.alias.clone(),
        name: room.display_name.clone(),
        topic: room.topic.clone(),
        federate: room.federate,
        members: room.members.iter().map(|m| m.user_id.clone()).collect(),
        power_levels: room
            .members
            .iter()
            .filter(|m| m.role == MemberRole::Admin)
            .map(|m| (m.user_id.clone(), m.power_level))
            .collect(),
    }
}

/// The warden's room: the admins only, never federated.
fn ops_room(appliance: &Appliance) -> PlannedRoom {
    let admins = &appliance.matrix.admins;
    PlannedRoom {
        alias_localpart: OPS_ROOM_LOCALPART.to_string(),
        alias: format!("#{OPS_ROOM_LOCALPART}:{}", appliance.matrix.server_name),
        name: format!("{} operations", appliance.name),
        topic: Some(
            "The warden's room: health notices, halts, loop breaks, audit heads. Admins only; no agent is a member."
                .to_string(),
        ),
        federate: false,
        members: admins.clone(),
        power_levels: admins.iter().map(|a| (a.clone(), 100)).collect(),
    }
}

/// Where the proxy reads the agent's grants, or why it has none; the model
/// decided which sandboxes have a grant file (`Sandbox::grants`).
fn egress_grants(appliance: &Appliance, agent: &Agent, sandbox: Option<&Sandbox>) -> EgressGrants {
    if let Some((sandbox, path)) = sandbox.and_then(|s| Some((s, s.grants.clone()?))) {
        return EgressGrants::File {
            sandbox: sandbox.name.clone(),
            path,
        };
    }
    EgressGrants::Refused(match &agent.egress {
        Egress::Web => "its egress is `web`: the proxy already lets it reach every public host".to_string(),
        Egress::None => {
            "its egress is `none`: it has no way through the egress proxy to widen (that takes an `egress` list in the spec)".to_string()
        }
        Egress::Domains(_) if !agent.grants => "the spec turns grants off for it (`grants = false`)".to_string(),
        Egress::Domains(_) if agent.host != appliance.matrix.host => format!(
            "its sandbox is on host `{}`, whose egress proxy the warden (on `{}`) does not write",
            agent.host, appliance.matrix.host
        ),
        Egress::Domains(_) => "its sandbox has no network".to_string(),
    })
}

/// A path under the state directory, made relative to it.
fn relative(path: &str) -> String {
    path.strip_prefix(STATE_DIR)
        .map_or(path, |rest| rest.trim_start_matches('/'))
        .to_string()
}

fn parse_user(user: &str) -> Option<(u32, u32)> {
    let (uid, gid) = user.split_once(':')?;
    Some((uid.parse().ok()?, gid.parse().ok()?))
}
