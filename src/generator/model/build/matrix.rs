//! `[matrix]`: the homeserver's host and server name, the human admins,
//! and where Synapse listens.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use super::addressing::Endpoints;
use super::{Builder, PAIRING_PORT, WEB_CLIENT_PORT, span};
use crate::common::grants::{
    DEFAULT_GRANT_MAX_SECS, DEFAULT_GRANT_SECS, GRANT_MAX_LIMIT_SECS, describe_duration, parse_duration,
};
use crate::generator::model::names::{MAX_NAME, server_name_problem};
use crate::generator::model::{Agent, Host, Matrix, Subnet, WebClient};
use crate::generator::spec::Spec;
use crate::schema::plan::DEFAULT_LOOP_BUDGET;

/// The longest server name whose user ids and room aliases
/// (`@<name>:<server>`, `#<room>:<server>`, names of up to
/// [`MAX_NAME`] bytes) stay within Matrix's 255 bytes.
const MAX_SERVER_NAME: usize = 255 - 2 - MAX_NAME;

/// The Matrix names the rooms and agents are built from.
pub(super) struct Accounts {
    pub server_name: String,
    /// Human admins' user ids, in spec order.
    pub admins: Vec<String>,
    /// Their localparts, for room members written `@name`.
    pub admin_names: BTreeSet<String>,
    /// `grant-default` and `grant-max`, in seconds.
    pub grant_default: u64,
    pub grant_max: u64,
}

pub(super) fn accounts(b: &mut Builder) -> Accounts {
    let matrix_spec = b.spec.matrix.get_ref();
    let agent_names = b.agent_names();
    b.known_host("the Matrix homeserver", &matrix_spec.host);
    if let Some(problem) = server_name_problem(matrix_spec.server_name.get_ref()) {
        b.error(
            span(&matrix_spec.server_name),
            format!("server name `{}` {problem}", matrix_spec.server_name.get_ref()),
            "user ids become `@agent:<server-name>`; it cannot change after first boot",
        );
    }
    let server_name = matrix_spec.server_name.get_ref().clone();
    if server_name.len() > MAX_SERVER_NAME {
        b.error(
            span(&matrix_spec.server_name),
            format!(
                "server name `{server_name}` is {} bytes, so user ids like `@<name>:{server_name}` would exceed \
                 Matrix's limit of 255 bytes",
                server_name.len()
            ),
            format!("use a server name of at most {MAX_SERVER_NAME} bytes"),
        );
    }
    let mut admins = Vec::new();
    let mut admin_names = BTreeSet::new();
    for admin in &matrix_spec.admins {
        b.check_account_name("admin", admin);
        if !admin_names.insert(admin.get_ref().clone()) {
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
    if let Some(budget) = matrix_spec.loop_budget.as_ref().filter(|b| *b.get_ref() == 0) {
        b.error(
            span(budget),
            "`loop-budget` is 0, which would have the warden mute the agents at their first message",
            format!("set it to 1 or more (the default is {DEFAULT_LOOP_BUDGET}), or remove it"),
        );
    }
    let (grant_default, grant_max) = grant_durations(b);
    Accounts {
        server_name,
        admins,
        admin_names,
        grant_default,
        grant_max,
    }
}

/// `grant-default` and `grant-max` (docs/spec.md): durations, the maximum
/// at most [`GRANT_MAX_LIMIT_SECS`], the default at most the maximum.
fn grant_durations(b: &mut Builder) -> (u64, u64) {
    let matrix_spec = b.spec.matrix.get_ref();
    let mut read = |value: &Option<toml::Spanned<String>>, key: &str, fallback: u64| match value {
        None => Some(fallback),
        Some(text) => match parse_duration(text.get_ref()) {
            Ok(secs) => Some(secs),
            Err(why) => {
                b.error(span(text), format!("`{key}`: {why}"), format!("e.g. `{key} = \"1h\"`"));
                None
            }
        },
    };
    let max = read(&matrix_spec.grant_max, "grant-max", DEFAULT_GRANT_MAX_SECS);
    let default = read(&matrix_spec.grant_default, "grant-default", DEFAULT_GRANT_SECS);
    if let (Some(max), Some(text)) = (max, &matrix_spec.grant_max)
        && max > GRANT_MAX_LIMIT_SECS
    {
        b.error(
            span(text),
            format!(
                "`grant-max` is {}, longer than the {} a grant may last",
                describe_duration(max),
                describe_duration(GRANT_MAX_LIMIT_SECS)
            ),
            "a host an agent needs for longer belongs in its `egress` list",
        );
    }
    if let (Some(default), Some(max)) = (default, max)
        && default > max
    {
        let at = matrix_spec
            .grant_default
            .as_ref()
            .or(matrix_spec.grant_max.as_ref())
            .map_or_else(|| span(&matrix_spec.server_name), span);
        b.error(
            at,
            format!(
                "`grant-default` ({}) is longer than `grant-max` ({})",
                describe_duration(default),
                describe_duration(max)
            ),
            "shorten `grant-default` or lengthen `grant-max`",
        );
    }
    (
        default.unwrap_or(DEFAULT_GRANT_SECS),
        max.unwrap_or(DEFAULT_GRANT_MAX_SECS),
    )
}

/// The homeserver as the model has it: Synapse listens on loopback and the
/// bridge, and on the overlay when agents on other hosts use it.
pub(super) fn resolve(
    spec: &Spec,
    accounts: Accounts,
    endpoints: &Endpoints,
    hosts: &BTreeMap<String, Host>,
    agents: &BTreeMap<String, Agent>,
    network: Subnet,
) -> Matrix {
    let matrix_host = &endpoints.matrix_host;
    let remote_matrix = agents.values().any(|a| &a.host != matrix_host);
    let mut bind_addresses = vec![Ipv4Addr::LOCALHOST, network.gateway()];
    let overlay_address = hosts.get(matrix_host).and_then(|h| h.overlay_address);
    if remote_matrix {
        bind_addresses.extend(overlay_address);
    }
    let mut web_listen = vec![Ipv4Addr::LOCALHOST];
    web_listen.extend(overlay_address);
    Matrix {
        host: matrix_host.clone(),
        server_name: accounts.server_name,
        port: endpoints.matrix_port,
        federation: spec.matrix.get_ref().federation,
        database: spec.matrix.get_ref().database,
        admins: accounts.admins,
        loop_budget: spec
            .matrix
            .get_ref()
            .loop_budget
            .as_ref()
            .map_or(DEFAULT_LOOP_BUDGET, |b| *b.get_ref()),
        grant_default: accounts.grant_default,
        grant_max: accounts.grant_max,
        bind_addresses,
        web_client: WebClient {
            client: "cinny",
            port: WEB_CLIENT_PORT,
            listen: web_listen,
            homeserver_path: "/_matrix",
        },
        pairing: overlay_address
            .filter(|_| remote_matrix)
            .map(|address| SocketAddrV4::new(address, PAIRING_PORT)),
    }
}
