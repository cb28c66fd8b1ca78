//! `appliance explain [AGENT]`: per sandbox, one table of what it is and
//! what it can touch, from the same model the firewall, the proxy and the
//! run options come from. tests/egress.rs checks the reach shown here
//! against what the sandboxes reach under gVisor.

mod backup;
mod dot;

use std::fmt::Write;

use anyhow::{Result, anyhow};
use serde::Serialize;

use crate::generator::lint::Finding;
use crate::generator::model::denied::{Denial, Enforcer, denied};
use crate::generator::model::{
    APPROVAL_SOCKET_DIR, Agent, Appliance, BindSource, Egress, Host, MATRIX_TOKEN_FILE, Reach, SECRETS_MOUNT,
    SOCKET_DIR, Sandbox, Size, is_socket_dir,
};
use crate::generator::runsc::{HostUds, RunscVersion, runtime_args};
use crate::generator::spec::schema::Approval;
use crate::operator::cli::{ExplainArgs, ExplainFormat};
use crate::schema::plan::BOOTSTRAP_LOCALPART;

/// Bumped when a field changes meaning or disappears.
pub const EXPLAIN_SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
pub struct Explanation {
    pub schema_version: u32,
    pub appliance: String,
    pub sandboxes: Vec<SandboxView>,
    /// Services on a host, outside every sandbox, that act on the agents.
    pub host_services: Vec<HostService>,
    /// Findings about no one sandbox: the spec, Matrix, rooms, hosts.
    pub lints: Vec<Finding>,
}

#[derive(Serialize)]
pub struct SandboxView {
    pub name: String,
    pub agent: String,
    pub host: String,
    pub purpose: String,
    pub runtime: String,
    /// As current gVisor spells them (`appliance doctor` checks the host's).
    pub runsc_flags: Vec<String>,
    pub runtime_reasons: Vec<String>,
    pub user: String,
    pub root_reason: Option<String>,
    /// Added to an otherwise empty set (`--cap-drop=ALL`).
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub memory: Size,
    pub cpus: String,
    pub pids: u32,
    pub mounts: Vec<Mount>,
    pub host_sockets: Vec<HostSocket>,
    pub address: Option<String>,
    pub reach: Vec<Reach>,
    pub egress: Egress,
    /// The file of names the admins granted it for a while (`!allow`),
    /// which the proxy reads besides its list; none: no grant can widen it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<String>,
    /// What the agent does only after an admin's approval in the ops room
    /// (`approve` in the spec), on its own sandbox and its code sandbox;
    /// empty: nothing waits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approve: Vec<String>,
    /// The credentials it uses, which the egress proxy adds, and those it
    /// holds itself (none of them: only placeholders).
    pub credentials: CredentialsView,
    /// What the firewall and the proxy refuse it, from the same model.
    pub denied: Vec<Denial>,
    pub secrets: Vec<String>,
    /// nvproxy driver capabilities, when the sandbox has GPUs.
    pub gpu: Option<Vec<String>>,
    /// How this differs from the MAGI demo's setup.
    pub versus_magi: Vec<String>,
    /// Lint findings about this sandbox or its agent (allowed ones with why).
    pub lints: Vec<Finding>,
}

/// Credentials, as SECURITY.md ("Credentials at the proxy") tells them.
#[derive(Serialize)]
pub struct CredentialsView {
    /// Each credential its requests carry: which, on which hosts, added
    /// by the egress proxy from which file on the host.
    pub uses: Vec<String>,
    /// The credentials inside the sandbox: none of those it uses (their
    /// variables hold placeholders); empty when it holds none.
    pub holds: Vec<String>,
}

/// A trusted service on a host, outside every sandbox: what it may do and
/// what whoever owns it could.
#[derive(Serialize)]
pub struct HostService {
    pub name: String,
    pub host: String,
    pub runs_as: String,
    pub privileges: Vec<String>,
    pub why_outside: String,
    pub if_owned: Vec<String>,
}

#[derive(Serialize)]
pub struct Mount {
    pub target: String,
    pub source: String,
    pub access: &'static str,
}

#[derive(Serialize)]
pub struct HostSocket {
    pub host_dir: String,
    pub target: String,
    /// `open` (connects) or `create` (serves).
    pub mode: &'static str,
    /// Who serves it when not the sandbox whose directory it is: the
    /// warden's approval broker, and what it holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
}

pub fn explanation(appliance: &Appliance, findings: &[Finding], only: Option<&str>) -> Result<Explanation> {
    if let Some(agent) = only
        && !appliance.agents.contains_key(agent)
    {
        let known: Vec<String> = appliance.agents.keys().map(|a| format!("`{a}`")).collect();
        return Err(anyhow!(
            "no agent `{agent}` in the spec\nhint: agents are: {}",
            known.join(", ")
        ));
    }
    let mut sandboxes = Vec::new();
    for (host, sandbox) in selected(appliance, only) {
        // Service sandboxes (Ollama, SearXNG) belong to no agent.
        let agent = sandbox.agent.as_ref().and_then(|a| appliance.agents.get(a));
        sandboxes.push(view(appliance, host, sandbox, agent, findings)?);
    }
    let per_sandbox = |f: &Finding| {
        ["sandbox ", "agent ", "runtime "]
            .iter()
            .any(|p| f.subject.starts_with(p))
    };
    Ok(Explanation {
        schema_version: EXPLAIN_SCHEMA_VERSION,
        appliance: appliance.name.clone(),
        sandboxes,
        host_services: vec![warden(appliance), backup::service(appliance)],
        lints: findings.iter().filter(|f| !per_sandbox(f)).cloned().collect(),
    })
}

/// The warden (docs/warden.md, modules/warden.nix) on the Matrix host.
fn warden(appliance: &Appliance) -> HostService {
    let matrix = &appliance.matrix;
    let account = format!("@{}:{}", BOOTSTRAP_LOCALPART, matrix.server_name);
    HostService {
        name: "warden (appliance-warden.service)".into(),
        host: matrix.host.clone(),
        runs_as: format!("root, outside every sandbox, as Matrix account {account}"),
        privileges: vec![
            format!("{account}'s token (root-only): it created every room, so its power is above every level, and it is a Synapse server admin"),
            "lowers an agent's power level below `events_default` (mute) and restores it; posts notices".into(),
            "obeys `!status`, `!halt`, `!resume`, `!allow`, `!deny`, `!grants`, `!approve`, `!refuse`, and ✅/👍/❌/👎 reactions on its cards in the ops room, only from the spec's admins, as the homeserver authenticates the sender".into(),
            "reads Docker's state and events and the agents' state volumes (their records of tool calls), through the host's docker CLI".into(),
            "writes /var/lib/appliance/warden (state, audit trail); the rest of the host is read-only to it".into(),
            format!(
                "writes the egress grant files ({}) and reloads the egress proxy (`systemctl reload squid.service`)",
                crate::common::grants::GRANTS_DIR
            ),
            format!(
                "serves the agents' Docker sockets under {APPROVAL_SOCKET_DIR} and forwards to their code sandboxes' ({SOCKET_DIR}); creating a container, an exec or a build waits for `!approve` from a spec admin"
            ),
        ],
        why_outside: "an agent must not be able to stop, fool or unmute it: it runs where no sandbox reaches, and Synapse, not the agents, enforces its mutes".into(),
        if_owned: vec![
            "mute or unmute any agent, post as the appliance in every room, read every room it is in".into(),
            "grant any grantable sandbox any public host name, never a private or metadata address (the proxy refuses those first)".into(),
            "run code in an agent's code sandbox without an admin's approval (still inside that gVisor sandbox)".into(),
            format!("use {account}'s server-admin rights: register, deactivate or reset accounts on the homeserver"),
            "rewrite the audit trail (heads already posted to the ops room still expose it)".into(),
        ],
    }
}

/// Every sandbox with its host, or only `only`'s (an agent, checked by
/// [`explanation`]).
fn selected<'a>(appliance: &'a Appliance, only: Option<&str>) -> Vec<(&'a Host, &'a Sandbox)> {
    appliance
        .hosts
        .values()
        .flat_map(|host| host.sandboxes.iter().map(move |sandbox| (host, sandbox)))
        .filter(|(_, sandbox)| only.is_none_or(|a| sandbox.agent.as_deref() == Some(a)))
        .collect()
}

fn view(
    appliance: &Appliance,
    host: &Host,
    sandbox: &Sandbox,
    agent: Option<&Agent>,
    findings: &[Finding],
) -> Result<SandboxView> {
    let own = agent.filter(|a| sandbox.name == a.sandbox);
    let subjects = [
        format!("sandbox {}", sandbox.name),
        agent.map_or_else(String::new, |a| format!("agent {}", a.name)),
        format!("runtime {}", sandbox.runtime),
    ];
    Ok(SandboxView {
        name: sandbox.name.clone(),
        agent: agent.map_or_else(String::new, |a| a.name.clone()),
        host: host.name.clone(),
        purpose: sandbox.purpose.clone(),
        runtime: sandbox.runtime.clone(),
        runsc_flags: runtime_args(&sandbox.profile, host.platform, RunscVersion::Current)?,
        runtime_reasons: sandbox.runtime_reasons.clone(),
        user: sandbox.user.clone(),
        root_reason: sandbox.root_reason.clone(),
        capabilities: sandbox.cap_add.clone(),
        no_new_privileges: sandbox.no_new_privileges,
        memory: sandbox.memory,
        cpus: sandbox.cpus.clone(),
        pids: sandbox.pids_limit,
        mounts: mounts(sandbox),
        host_sockets: host_sockets(sandbox),
        address: sandbox.network.as_ref().map(|n| format!("{} on {}", n.address, n.name)),
        reach: sandbox.reach.clone(),
        egress: sandbox.egress.clone(),
        grants: sandbox.grants.clone(),
        approve: agent.map_or_else(Vec::new, approvals),
        credentials: credentials_view(host, sandbox),
        denied: denied(appliance.hosts.values(), host, sandbox),
        secrets: own.map_or_else(Vec::new, secrets),
        gpu: sandbox
            .profile
            .gpu
            .as_ref()
            .map(|caps| caps.iter().map(|c| format!("{c:?}").to_lowercase()).collect()),
        versus_magi: versus_magi(sandbox, own),
        lints: findings
            .iter()
            .filter(|f| subjects.contains(&f.subject))
            .cloned()
            .collect(),
    })
}

/// `ro` or `rw`, from the same model fields `docker::run_options` turns
/// into `--read-only` and `:ro`.
fn access(read_only: bool) -> &'static str {
    if read_only { "ro" } else { "rw" }
}

fn mounts(sandbox: &Sandbox) -> Vec<Mount> {
    let mut mounts = vec![Mount {
        target: "/".into(),
        source: format!("image {}", sandbox.image),
        access: access(sandbox.read_only_root),
    }];
    for tmpfs in &sandbox.tmpfs {
        mounts.push(Mount {
            target: tmpfs.target.clone(),
            source: format!("tmpfs {}", tmpfs.size),
            access: "rw",
        });
    }
    for volume in &sandbox.volumes {
        mounts.push(Mount {
            target: volume.target.clone(),
            source: format!("volume {}", volume.name),
            // The exec sandbox mounts its agent's state read-only.
            access: access(volume.read_only),
        });
    }
    for bind in &sandbox.binds {
        mounts.push(Mount {
            target: bind.target.clone(),
            source: match &bind.source {
                BindSource::Generated(path) => format!("generated {path}"),
                BindSource::Host(path) => format!("host {path}"),
            },
            access: access(bind.read_only),
        });
    }
    mounts
}

fn host_sockets(sandbox: &Sandbox) -> Vec<HostSocket> {
    sandbox
        .binds
        .iter()
        .filter_map(|bind| match &bind.source {
            BindSource::Host(path) if is_socket_dir(path) => Some(HostSocket {
                served_by: path.strip_prefix(APPROVAL_SOCKET_DIR).map(|exec| {
                    format!(
                        "the warden's approval broker, which forwards to {SOCKET_DIR}{exec} what runs no code and holds creating a container, an exec or an image build until an admin's `!approve`"
                    )
                }),
                host_dir: path.clone(),
                target: bind.target.clone(),
                mode: match sandbox.profile.host_uds {
                    HostUds::Create => "create",
                    HostUds::Open => "open",
                    HostUds::None => "none (gVisor refuses)",
                },
            }),
            _ => None,
        })
        .collect()
}

/// What the sandbox's requests carry that it never holds: each credential
/// the proxy adds; and what it holds of them (nothing but placeholders).
fn credentials_view(host: &Host, sandbox: &Sandbox) -> CredentialsView {
    let uses = sandbox
        .credentials
        .iter()
        .map(|c| {
            format!(
                "{} ({}) on {}: added by the egress proxy of host {} from {} (on the host); TLS to those hosts is terminated by the proxy, for this sandbox only",
                c.service,
                c.variable,
                c.hosts.join(", "),
                host.name,
                c.token_file
            )
        })
        .collect();
    let holds = sandbox
        .credentials
        .iter()
        .map(|c| {
            format!(
                "none: {}={} is a placeholder; the {} credential never enters the sandbox",
                c.variable, c.placeholder, c.service
            )
        })
        .collect();
    CredentialsView { uses, holds }
}

/// What waits for an admin's approval, and who decides.
fn approvals(agent: &Agent) -> Vec<String> {
    agent
        .approve
        .iter()
        .map(|action| match action {
            Approval::CodeExecution => format!(
                "code-execution: creating a container, an exec or an image build in `{}` waits for `!approve` from a spec admin in the ops room (refused after the warden's `--approval-timeout`)",
                crate::generator::model::exec_sandbox_name(&agent.name)
            ),
        })
        .collect()
}

fn secrets(agent: &Agent) -> Vec<String> {
    let mut secrets = vec![format!(
        "{}/{MATRIX_TOKEN_FILE} (read-only at {SECRETS_MOUNT}): its Matrix token",
        agent.secrets_dir
    )];
    let kind = crate::generator::kinds::of(agent.kind);
    let mut env: Vec<&str> = kind.plan().token_env.to_vec();
    env.extend(agent.operator_env());
    secrets.push(format!("{}/env (--env-file): {}", agent.secrets_dir, env.join(", ")));
    secrets
}

/// `own`: the agent whose own sandbox this is, if it is one.
fn versus_magi(sandbox: &Sandbox, own: Option<&Agent>) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(match sandbox.profile.host_uds {
        HostUds::None => "host UDS: demo `all`; here none".to_string(),
        HostUds::Open => "host UDS: demo `all`; here `open`, one socket directory".to_string(),
        HostUds::Create => "host UDS: demo `all`; here `create`, one socket directory".to_string(),
    });
    lines.push(if sandbox.profile.docker_in_gvisor {
        "raw and packet sockets: on, as in the demo, because Docker-in-gVisor needs them".to_string()
    } else {
        "raw and packet sockets: demo on; here off".to_string()
    });
    lines.push(match &sandbox.profile.gpu {
        Some(caps) => format!(
            "nvproxy: demo `all` driver capabilities; here {}",
            caps.iter()
                .map(|c| format!("{c:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "nvproxy: demo on with `all` capabilities; here no GPU".to_string(),
    });
    if let Some(agent) = own {
        lines.push(format!(
            "Matrix: demo open DM and group policies; here only {} allowlisted users",
            agent.allowed_users.len()
        ));
    } else {
        lines.push("Matrix: no access (no token, no reach)".to_string());
    }
    let egress = if sandbox.network.is_none() {
        "no network at all".to_string()
    } else {
        sandbox.egress.describe()
    };
    lines.push(format!("egress: demo unfiltered; here {egress}"));
    lines
}

pub fn run(args: &ExplainArgs) -> Result<()> {
    let (appliance, findings) = super::load_linted(&args.spec.spec)?;
    let explanation = explanation(&appliance, &findings, args.agent.as_deref())?;
    match args.format {
        ExplainFormat::Json => crate::common::term::println(&serde_json::to_string_pretty(&explanation)?),
        // Lint reasons are the spec's text: nothing in them may act on the terminal.
        ExplainFormat::Text => crate::common::term::print(&crate::common::term::inert_lines(&text(&explanation))),
        // The graph's strings are already escaped for DOT quoted strings.
        ExplainFormat::Dot => {
            crate::common::term::print(&dot::graph(&appliance, &selected(&appliance, args.agent.as_deref())))
        }
    }
}

fn egress_line(s: &SandboxView) -> String {
    if s.address.is_none() {
        "no network at all".into()
    } else if let Some(file) = &s.grants {
        format!(
            "{}; and the names the admins grant it for a while from the ops room (`!allow`), never a private or metadata address: {file}",
            s.egress.describe()
        )
    } else {
        s.egress.describe()
    }
}

fn denial_line(d: &Denial) -> String {
    let by: Vec<&str> = d.enforced_by.iter().map(|e| enforcer_name(*e)).collect();
    format!("{}: {} [{}]", d.target, d.why, by.join(", "))
}

/// Short names for the text table; docs/sandboxes.md says which is which.
fn enforcer_name(enforcer: Enforcer) -> &'static str {
    match enforcer {
        Enforcer::NoNetwork => "--network=none",
        Enforcer::Firewall => "firewall",
        Enforcer::BridgeTable => "bridge table",
        Enforcer::Proxy => "egress proxy",
    }
}

fn lint_line(f: &Finding) -> String {
    let state = f.allowed.as_ref().map_or_else(
        || format!("{:?}", f.severity).to_lowercase(),
        |r| format!("allowed: {}", crate::common::term::inert(r)),
    );
    format!("{} ({state}): {}", f.code, f.message)
}

fn row(out: &mut String, key: &str, values: &[String]) {
    let values: Vec<&str> = if values.is_empty() {
        vec!["none"]
    } else {
        values.iter().map(String::as_str).collect()
    };
    for (index, value) in values.iter().enumerate() {
        let key = if index == 0 { key } else { "" };
        let _ = writeln!(out, "  {key:<14} {value}");
    }
}

pub fn text(explanation: &Explanation) -> String {
    let mut out = String::new();
    for (index, s) in explanation.sandboxes.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "sandbox {} on host {}: {}", s.name, s.host, s.purpose);
        let mut runtime = vec![format!("{} {}", s.runtime, s.runsc_flags.join(" "))];
        runtime.extend(s.runtime_reasons.iter().map(|r| format!("why: {r}")));
        row(&mut out, "runtime", &runtime);
        let mut user = vec![s.user.clone()];
        user.extend(s.root_reason.iter().map(|r| format!("why root: {r}")));
        row(&mut out, "user", &user);
        let caps = if s.capabilities.is_empty() {
            "none (all dropped)".to_string()
        } else {
            s.capabilities.join(" ")
        };
        let nnp = if s.no_new_privileges { ", no-new-privileges" } else { "" };
        row(&mut out, "capabilities", &[format!("{caps}{nnp}")]);
        row(
            &mut out,
            "limits",
            &[format!("memory {}, cpus {}, pids {}", s.memory, s.cpus, s.pids)],
        );
        let mounts: Vec<String> = s
            .mounts
            .iter()
            .map(|m| format!("{} {} ({})", m.target, m.access, m.source))
            .collect();
        row(&mut out, "mounts", &mounts);
        let sockets: Vec<String> = s
            .host_sockets
            .iter()
            .map(|h| match &h.served_by {
                Some(by) => format!("{} at {} ({}; served by {by})", h.host_dir, h.target, h.mode),
                None => format!("{} at {} ({})", h.host_dir, h.target, h.mode),
            })
            .collect();
        row(&mut out, "host sockets", &sockets);
        row(
            &mut out,
            "network",
            &[s.address.clone().unwrap_or_else(|| "none (--network=none)".into())],
        );
        let reach: Vec<String> = s
            .reach
            .iter()
            .map(|r| format!("{} {}:{}/{}: {}", r.service, r.address, r.port, r.protocol, r.why))
            .collect();
        row(&mut out, "reach", &reach);
        row(&mut out, "egress", &[egress_line(s)]);
        if !s.approve.is_empty() {
            row(&mut out, "approval", &s.approve);
        }
        if !s.credentials.uses.is_empty() {
            row(&mut out, "uses", &s.credentials.uses);
            row(&mut out, "holds", &s.credentials.holds);
        }
        let denied: Vec<String> = s.denied.iter().map(denial_line).collect();
        row(&mut out, "denied", &denied);
        row(&mut out, "secrets", &s.secrets);
        row(
            &mut out,
            "gpu",
            &s.gpu.iter().map(|caps| caps.join(", ")).collect::<Vec<_>>(),
        );
        row(&mut out, "vs MAGI demo", &s.versus_magi);
        let lints: Vec<String> = s.lints.iter().map(lint_line).collect();
        row(&mut out, "lints", &lints);
    }
    for service in &explanation.host_services {
        let _ = writeln!(
            out,
            "\n{} on host {}: outside the sandboxes",
            service.name, service.host
        );
        row(&mut out, "runs as", std::slice::from_ref(&service.runs_as));
        row(&mut out, "may", &service.privileges);
        row(&mut out, "why outside", std::slice::from_ref(&service.why_outside));
        row(&mut out, "if owned", &service.if_owned);
    }
    if !explanation.lints.is_empty() {
        let _ = writeln!(out, "\nappliance {}", explanation.appliance);
        let lints: Vec<String> = explanation
            .lints
            .iter()
            .map(|f| format!("{}: {}", f.subject, lint_line(f)))
            .collect();
        row(&mut out, "lints", &lints);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::generator::docker::run_options;
    use crate::test_support::default_spec;

    /// Each mount target and `ro`/`rw` as the `docker run` options give
    /// them: the root by `--read-only`, each `--tmpfs` and `--volume`.
    fn modes_in_run_options(sandbox: &Sandbox) -> BTreeMap<String, String> {
        let args = run_options(sandbox).cli_args(|_| "/source".into());
        let mut modes = BTreeMap::new();
        let root = if args.iter().any(|a| a == "--read-only") {
            "ro"
        } else {
            "rw"
        };
        modes.insert("/".to_string(), root.to_string());
        for arg in &args {
            if let Some(tmpfs) = arg.strip_prefix("--tmpfs=") {
                let (target, options) = tmpfs.split_once(':').unwrap();
                let access = options.split(',').next().unwrap();
                modes.insert(target.to_string(), access.to_string());
            }
            if let Some(volume) = arg.strip_prefix("--volume=") {
                let mut parts = volume.split(':').skip(1);
                let target = parts.next().unwrap();
                let access = if parts.next() == Some("ro") { "ro" } else { "rw" };
                modes.insert(target.to_string(), access.to_string());
            }
        }
        modes
    }

    /// issue 19, 8(e): explain showed casper-exec's `/opt/data` as `rw`,
    /// mounted read-only.
    #[test]
    fn mount_modes_are_those_of_the_run_options() {
        let appliance = default_spec();
        for host in appliance.hosts.values() {
            for sandbox in &host.sandboxes {
                let shown: BTreeMap<String, String> = mounts(sandbox)
                    .into_iter()
                    .map(|m| (m.target, m.access.to_string()))
                    .collect();
                assert_eq!(shown, modes_in_run_options(sandbox), "sandbox `{}`", sandbox.name);
            }
        }
    }
}
