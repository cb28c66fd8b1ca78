//! `appliance inspect`: the resolved model, as text for people or as
//! versioned JSON (documented in docs/inspect.md) for tools.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::Result;
use serde::Serialize;

use crate::common::term::{self, inert};
use crate::generator::docker::run_options;
use crate::generator::model::{Agent, Appliance, BindSource, Host, Inference, Matrix, Room, Sandbox, Subnet};
use crate::generator::render::plan::plan;
use crate::generator::runsc::{RunscVersion, runtime_args};
use crate::operator::cli::{Format, InspectArgs};
use crate::schema::plan::Plan;

/// Bumped when a field of the JSON changes meaning or disappears.
pub const INSPECT_SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
pub struct Inspection<'a> {
    pub schema_version: u32,
    pub name: &'a str,
    pub network: Subnet,
    pub overlay: Option<Subnet>,
    pub matrix: &'a Matrix,
    pub inference: Option<&'a Inference>,
    pub hosts: BTreeMap<&'a str, HostView<'a>>,
    pub agents: BTreeMap<&'a str, &'a Agent>,
    pub rooms: &'a BTreeMap<String, Room>,
    pub bootstrap: Plan,
}

#[derive(Serialize)]
pub struct HostView<'a> {
    #[serde(flatten)]
    pub host: &'a Host,
    pub runtime_args: BTreeMap<String, Vec<String>>,
    /// `docker run` options per sandbox, generated files shown by their
    /// path in the generated tree.
    pub docker_run_args: BTreeMap<&'a str, Vec<String>>,
}

pub fn inspection<'a>(appliance: &'a Appliance, only_host: Option<&str>) -> Result<Inspection<'a>> {
    if let Some(host) = only_host
        && !appliance.hosts.contains_key(host)
    {
        return Err(super::unknown_host(appliance, host));
    }
    let mut hosts = BTreeMap::new();
    for host in appliance
        .hosts
        .values()
        .filter(|h| only_host.is_none_or(|o| o == h.name))
    {
        let mut args = BTreeMap::new();
        for profile in &host.runtimes {
            args.insert(
                profile.name(),
                runtime_args(profile, host.platform, RunscVersion::Current)?,
            );
        }
        let docker_run_args = host
            .sandboxes
            .iter()
            .map(|s| (s.name.as_str(), docker_args(s)))
            .collect();
        hosts.insert(
            host.name.as_str(),
            HostView {
                host,
                runtime_args: args,
                docker_run_args,
            },
        );
    }
    Ok(Inspection {
        schema_version: INSPECT_SCHEMA_VERSION,
        name: &appliance.name,
        network: appliance.network,
        overlay: appliance.overlay,
        matrix: &appliance.matrix,
        inference: appliance.inference.as_ref(),
        hosts,
        agents: appliance
            .agents
            .values()
            .filter(|a| only_host.is_none_or(|o| o == a.host))
            .map(|a| (a.name.as_str(), a))
            .collect(),
        rooms: &appliance.rooms,
        bootstrap: plan(appliance),
    })
}

fn docker_args(sandbox: &Sandbox) -> Vec<String> {
    run_options(sandbox).cli_args(|source| match source {
        BindSource::Generated(path) => format!("<generated>/{path}"),
        BindSource::Host(path) => path.clone(),
    })
}

pub fn run(args: &InspectArgs) -> Result<()> {
    let appliance = super::load(&args.spec.spec)?;
    let view = inspection(&appliance, args.host.as_deref())?;
    match args.format {
        Format::Json => term::println(&serde_json::to_string_pretty(&view)?),
        // Free text from the spec (reasons) is made inert where it is
        // written; this catches anything else that reaches the terminal.
        Format::Text => term::print(&term::inert_lines(&text(&view))),
    }
}

fn text(view: &Inspection) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "appliance {} (network {})", view.name, view.network);
    matrix_text(&mut out, view.matrix);
    if let Some(inference) = view.inference {
        inference_text(&mut out, inference);
    }
    for (name, host) in &view.hosts {
        host_text(&mut out, name, host);
    }
    for agent in view.agents.values() {
        agent_text(&mut out, agent);
    }
    for room in view.rooms.values() {
        let members: Vec<&str> = room.members.iter().map(|m| m.user_id.as_str()).collect();
        let _ = writeln!(out, "\nroom {}: {}", room.alias, members.join(", "));
    }
    let plan = &view.bootstrap;
    let _ = writeln!(
        out,
        "\nbootstrap on {}: {}, {}, state in {}",
        plan.homeserver.url,
        super::count(plan.accounts.len(), "account", "accounts"),
        super::count(plan.rooms.len(), "room", "rooms"),
        plan.state_dir
    );
    out
}

/// The homeserver, its web client and the pairing server.
fn matrix_text(w: &mut String, m: &Matrix) {
    let _ = writeln!(
        w,
        "matrix: {} on host {} port {}, federation {}, admins: {}",
        m.server_name,
        m.host,
        m.port,
        if m.federation { "on" } else { "off" },
        if m.admins.is_empty() {
            "none".to_string()
        } else {
            m.admins.join(", ")
        }
    );
    let web = &m.web_client;
    let listen: Vec<String> = web.listen.iter().map(|a| format!("{a}:{}", web.port)).collect();
    let _ = writeln!(
        w,
        "web client: {} on {}, locked to this homeserver (docs/first-conversation.md)",
        web.client,
        listen.join(", ")
    );
    if let Some(pairing) = m.pairing {
        let _ = writeln!(
            w,
            "pairing: on {pairing}, for the agents of other hosts (docs/pairing.md)"
        );
    }
}

fn inference_text(w: &mut String, inference: &Inference) {
    let _ = writeln!(
        w,
        "inference: ollama ({}) on host {} {} at {}:{}, models: {}",
        inference.acceleration,
        inference.host,
        inference.sandbox.as_ref().map_or_else(
            || "as a host service (sandbox = \"host\")".to_string(),
            |s| format!("in sandbox `{s}`")
        ),
        inference.bind_address,
        inference.port,
        inference.models.join(", ")
    );
    if let Some(address) = inference.overlay_address {
        let _ = writeln!(w, "  other hosts' agents: {address}:{}", inference.port);
    }
}

/// A host: its GPU, open ports, runtimes and each sandbox's `docker run`.
fn host_text(w: &mut String, name: &str, host: &HostView) {
    let h = host.host;
    let _ = writeln!(
        w,
        "\nhost {name}: {} {}, gVisor platform {}",
        h.target, h.system, h.platform
    );
    if let Some(gpu) = &h.gpu {
        let _ = writeln!(w, "  gpu: {} x{}", gpu.model, gpu.count);
    }
    for rule in &h.firewall {
        let on = rule.interface.as_deref().unwrap_or("all interfaces");
        let _ = writeln!(
            w,
            "  open {}/{} on {on}: {}",
            rule.port,
            rule.protocol,
            inert(&rule.reason)
        );
    }
    for (runtime, args) in &host.runtime_args {
        let _ = writeln!(w, "  runtime {runtime}: {}", args.join(" "));
    }
    for sandbox in &h.sandboxes {
        let _ = writeln!(
            w,
            "  sandbox {} ({}), runtime {}",
            sandbox.name, sandbox.purpose, sandbox.runtime
        );
        for reason in &sandbox.runtime_reasons {
            let _ = writeln!(w, "    why not strict: {}", inert(reason));
        }
        if let Some(reason) = &sandbox.root_reason {
            let _ = writeln!(w, "    why root: {}", inert(reason));
        }
        let _ = writeln!(
            w,
            "    docker run {} {}{}",
            host.docker_run_args[sandbox.name.as_str()].join(" "),
            sandbox.image,
            sandbox.command.iter().map(|c| format!(" {c}")).collect::<String>()
        );
    }
}

/// An agent: who it answers, what is loosened and why, what is off.
fn agent_text(w: &mut String, agent: &Agent) {
    let _ = writeln!(
        w,
        "\nagent {} ({}) on host {} as {}, model {}",
        agent.name,
        agent.kind,
        agent.host,
        agent.user_id,
        agent.model.as_deref().unwrap_or("none")
    );
    let _ = writeln!(w, "  answers: {}", agent.allowed_users.join(", "));
    for permissive in &agent.permissive {
        let _ = writeln!(
            w,
            "  permissive: {}\n    why: {}",
            permissive.setting,
            inert(&permissive.reason)
        );
    }
    for warning in &agent.warnings {
        let _ = writeln!(w, "  warning[{}]: {}", warning.code, inert(&warning.message));
    }
}
