//! Security lints with stable codes, run by `check` and `generate` over the
//! resolved model (and the spec's text, for inline secrets).
//!
//! A `deny` lint stops `check` and `generate` unless the spec allows it
//! with a written reason (`[lints] allow = { code = "reason" }`); a `warn`
//! lint is printed. Allowed findings are still shown, with the reason, by
//! `check` and `explain`. SECURITY.md maps each lint to the threat model.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::common::term::inert;
use crate::generator::model::{Appliance, Egress, MemberRole, exec_sandbox_name};
use crate::generator::runsc::{RunscVersion, runtime_args};
use crate::generator::spec::schema::DriverCapability;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Deny,
    Warn,
}

/// One rule: its stable code, severity, a one-line why and the fix.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Lint {
    pub code: &'static str,
    pub severity: Severity,
    pub why: &'static str,
    pub fix: &'static str,
}

const fn lint(code: &'static str, severity: Severity, why: &'static str, fix: &'static str) -> Lint {
    Lint {
        code,
        severity,
        why,
        fix,
    }
}

/// Every lint. Codes never change meaning; a retired code is not reused.
pub const LINTS: &[Lint] = &[
    lint(
        "runsc-permissive-flags",
        Severity::Deny,
        "raw sockets and packet writes let a sandbox forge traffic on the bridge; only Docker-in-gVisor needs them",
        "give `code-execution` its own `<agent>-exec` sandbox; no other sandbox may use `runsc-dind`",
    ),
    lint(
        "runsc-host-uds-all",
        Severity::Deny,
        "`--host-uds=all` lets a sandbox connect to and create any host socket (the MAGI demo's setting)",
        "use `open` or `create` on one dedicated socket directory, as the generated runtimes do",
    ),
    lint(
        "gpu-capabilities-broad",
        Severity::Warn,
        "nvproxy exposes more of the NVIDIA driver's surface for each capability beyond compute and utility",
        "remove `graphics`/`video` from `driver-capabilities` unless a sandbox renders or encodes",
    ),
    lint(
        "sandbox-root",
        Severity::Deny,
        "a sandbox running as root without need has gVisor's full capabilities to attack the sentry with",
        "run it as its image's non-root user; only the Docker-in-gVisor sandbox has a reason for root",
    ),
    lint(
        "published-port",
        Severity::Warn,
        "a published port is reachable on every host interface, past the host firewall (Docker's DNAT)",
        "remove `publish` and reach the gateway over SSH port forwarding",
    ),
    lint(
        "matrix-federation",
        Severity::Warn,
        "with federation, other homeservers can reach Synapse, and rooms that federate carry the agents' chat out",
        "set `federation = false` under `[matrix]` unless the appliance must talk to other servers",
    ),
    lint(
        "room-without-admin",
        Severity::Warn,
        "a room with agents and no human admin has nobody who can moderate it or stop a reply loop",
        "add an `@admin` to the room's `members`",
    ),
    lint(
        "service-beyond-appliance",
        Severity::Deny,
        "Synapse or Ollama listening beyond loopback, the bridge and the overlay is reachable from outside",
        "let the model choose the listen addresses; do not bind 0.0.0.0 or a public address",
    ),
    lint(
        "sandbox-without-limits",
        Severity::Deny,
        "a sandbox without memory or pids limits can exhaust the host for every other sandbox",
        "set `memory` and `pids` (at least the minimum) for the agent",
    ),
    lint(
        "web-egress-with-exec",
        Severity::Warn,
        "an injected prompt can run commands that send the agent's secrets (Matrix token, GH_TOKEN, files) to any \
         public host",
        "use a list of domains for `egress`, or drop `remote-exec` / `code-network`",
    ),
    lint(
        "code-network-raw-sockets",
        Severity::Warn,
        "the code sandbox has raw and packet sockets (Docker needs them); on the bridge it can forge other \
         sandboxes' addresses, which the firewall and proxy ACLs trust",
        "keep `code-network` off; fetch what code needs through the agent instead",
    ),
    lint(
        "inline-secret",
        Severity::Deny,
        "the spec ends up in the world-readable Nix store and in git; a token in it is public",
        "remove it from the spec; put it in the agent's env file on the host (docs/agents.md)",
    ),
];

pub fn find(code: &str) -> Option<&'static Lint> {
    LINTS.iter().find(|l| l.code == code)
}

/// One lint that fires, on one subject.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    /// What it is about: `sandbox casper-exec`, `room magi`, `spec`, ...
    pub subject: String,
    pub message: String,
    pub why: &'static str,
    pub fix: &'static str,
    /// The spec's reason, when `[lints] allow` accepts this code.
    pub allowed: Option<String>,
}

impl Finding {
    /// A deny finding the spec does not allow.
    pub fn blocks(&self) -> bool {
        self.severity == Severity::Deny && self.allowed.is_none()
    }
}

/// Every finding for an appliance; `spec_text` is the spec as written.
pub fn run(appliance: &Appliance, spec_text: &str) -> Vec<Finding> {
    let mut raw: Vec<(&'static str, String, String)> = Vec::new();
    sandboxes(appliance, &mut raw);
    services(appliance, &mut raw);
    matrix(appliance, &mut raw);
    agents(appliance, &mut raw);
    for (line, what) in inline_secrets(spec_text) {
        raw.push((
            "inline-secret",
            "spec".into(),
            format!("line {line} holds what looks like {what}"),
        ));
    }
    raw.into_iter()
        .map(|(code, subject, message)| {
            let lint = find(code).expect("every emitted code is in LINTS");
            Finding {
                code,
                severity: lint.severity,
                subject,
                message,
                why: lint.why,
                fix: lint.fix,
                allowed: appliance.lint_allow.get(code).cloned(),
            }
        })
        .collect()
}

type Raw = Vec<(&'static str, String, String)>;

fn sandboxes(appliance: &Appliance, out: &mut Raw) {
    for host in appliance.hosts.values() {
        for sandbox in &host.sandboxes {
            let subject = format!("sandbox {}", sandbox.name);
            let is_exec = sandbox
                .agent
                .as_ref()
                .is_some_and(|agent| sandbox.name == exec_sandbox_name(agent));
            if sandbox.profile.docker_in_gvisor && !is_exec {
                out.push((
                    "runsc-permissive-flags",
                    subject.clone(),
                    format!("runs under `{}` with raw sockets and packet writes", sandbox.runtime),
                ));
            }
            if sandbox.user.starts_with("0:") && sandbox.root_reason.is_none() {
                out.push(("sandbox-root", subject.clone(), "runs as root with no reason".into()));
            }
            // A port published on one address (Ollama's sandbox on the
            // overlay address, for other hosts' agents) is not on every
            // host interface.
            if !sandbox.publish.is_empty() && sandbox.publish_on.is_none() {
                let ports: Vec<String> = sandbox.publish.iter().map(u16::to_string).collect();
                out.push((
                    "published-port",
                    subject.clone(),
                    format!("publishes port {}", ports.join(", ")),
                ));
            }
            let unlimited = |v: &str| v.is_empty() || v.trim_start_matches('0').is_empty() || v == "-1";
            if sandbox.memory.bytes() == 0 || sandbox.pids_limit == 0 || unlimited(&sandbox.cpus) {
                out.push((
                    "sandbox-without-limits",
                    subject,
                    format!(
                        "memory `{}`, cpus `{}`, pids {}",
                        sandbox.memory, sandbox.cpus, sandbox.pids_limit
                    ),
                ));
            }
        }
        for profile in &host.runtimes {
            if let Ok(args) = runtime_args(profile, host.platform, RunscVersion::Current) {
                runtime(&profile.name(), &args, out);
            }
        }
        if let Some(gpu) = &host.gpu {
            let broad: Vec<String> = gpu
                .driver_capabilities
                .iter()
                .filter(|c| !matches!(c, DriverCapability::Compute | DriverCapability::Utility))
                .map(|c| format!("{c:?}").to_lowercase())
                .collect();
            if !broad.is_empty() {
                out.push((
                    "gpu-capabilities-broad",
                    format!("host {}", host.name),
                    format!("nvproxy driver capabilities include {}", broad.join(", ")),
                ));
            }
        }
    }
}

/// Checks one runtime's runsc arguments (as generated, or as a hand-edited
/// daemon.json would have them).
pub fn runtime(name: &str, args: &[String], out: &mut Raw) {
    if args.iter().any(|a| a == "--host-uds=all") {
        out.push((
            "runsc-host-uds-all",
            format!("runtime {name}"),
            "passes `--host-uds=all`".into(),
        ));
    }
}

fn services(appliance: &Appliance, out: &mut Raw) {
    let mut inside: Vec<Ipv4Addr> = vec![appliance.network.gateway()];
    for host in appliance.hosts.values() {
        inside.push(host.network_address);
        inside.extend(host.overlay_address);
        // Ollama in its own sandbox listens on its bridge address.
        inside.extend(
            host.sandboxes
                .iter()
                .filter_map(|s| s.network.as_ref().map(|n| n.address)),
        );
    }
    let beyond = |a: &Ipv4Addr| !a.is_loopback() && !inside.contains(a);
    for address in appliance.matrix.bind_addresses.iter().filter(|a| beyond(a)) {
        out.push((
            "service-beyond-appliance",
            "matrix".into(),
            format!("Synapse listens on {address}"),
        ));
    }
    if let Some(inference) = appliance.inference.as_ref().filter(|i| beyond(&i.bind_address)) {
        out.push((
            "service-beyond-appliance",
            "inference".into(),
            format!("Ollama listens on {}", inference.bind_address),
        ));
    }
}

fn matrix(appliance: &Appliance, out: &mut Raw) {
    if appliance.matrix.federation {
        out.push(("matrix-federation", "matrix".into(), "federation is on".into()));
    }
    for room in appliance.rooms.values() {
        if !room.members.iter().any(|m| m.role == MemberRole::Admin) {
            out.push((
                "room-without-admin",
                format!("room {}", room.name),
                format!("room {} has no admin member", room.alias),
            ));
        }
    }
}

fn agents(appliance: &Appliance, out: &mut Raw) {
    for agent in appliance.agents.values() {
        if agent.code_network {
            out.push((
                "code-network-raw-sockets",
                format!("agent {}", agent.name),
                format!("`{}` joins the bridge with raw sockets", exec_sandbox_name(&agent.name)),
            ));
        }
        if agent.egress != Egress::Web {
            continue;
        }
        let mut what = Vec::new();
        if agent.remote_exec {
            what.push("`remote-exec` (chat messages run shell commands)");
        }
        if agent.code_network {
            what.push("`code-network` (executed code has the network)");
        }
        if !what.is_empty() {
            out.push((
                "web-egress-with-exec",
                format!("agent {}", agent.name),
                format!("egress `web` together with {}", what.join(" and ")),
            ));
        }
    }
}

/// Prefixes of well-known token formats, and what they are.
const TOKEN_PREFIXES: &[(&str, &str)] = &[
    ("ghp_", "a GitHub token"),
    ("gho_", "a GitHub OAuth token"),
    ("ghs_", "a GitHub token"),
    ("github_pat_", "a GitHub token"),
    ("syt_", "a Synapse access token"),
    ("glpat-", "a GitLab token"),
    ("xoxb-", "a Slack token"),
    ("xoxp-", "a Slack token"),
    ("sk-", "an API key"),
    ("AKIA", "an AWS access key"),
    ("-----BEGIN", "a private key"),
];

/// Lines of the spec that hold a token-like string (comments included: a
/// commented-out token is still in git).
pub fn inline_secrets(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for word in line.split(|c: char| c.is_whitespace() || "\"'=,[]{}#".contains(c)) {
            // FIDO SSH key types (`sk-ssh-ed25519@openssh.com`) are public keys.
            if word.starts_with("sk-ssh-") || word.starts_with("sk-ecdsa-") {
                continue;
            }
            let hit = TOKEN_PREFIXES
                .iter()
                .find(|(prefix, _)| word.starts_with(prefix) && word.len() >= prefix.len() + 16);
            if let Some((_, what)) = hit {
                found.push((index + 1, *what));
                break;
            }
        }
    }
    found
}

/// One finding for people: `deny[code] subject: message`, why and fix.
pub fn describe(finding: &Finding) -> String {
    let level = match (&finding.allowed, finding.severity) {
        (Some(_), _) => "allowed",
        (None, Severity::Deny) => "deny",
        (None, Severity::Warn) => "warning",
    };
    // The subject, message and reason carry the spec's names and text.
    let mut text = format!(
        "{level}[{}] {}: {}\n  why: {}\n  fix: {}",
        finding.code,
        inert(&finding.subject),
        inert(&finding.message),
        finding.why,
        finding.fix
    );
    if let Some(reason) = &finding.allowed {
        text.push_str(&format!("\n  allowed by the spec: {}", inert(reason)));
    }
    text
}

/// Deny lints the spec does not allow: `check` and `generate` stop.
#[derive(Debug)]
pub struct LintsDenied {
    pub spec: String,
    pub count: usize,
}

impl std::fmt::Display for LintsDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "error: {}: {} deny {} (above)\nhint: fix each, or accept it with a reason under `[lints] allow`",
            self.spec,
            self.count,
            if self.count == 1 { "lint fires" } else { "lints fire" }
        )
    }
}

impl std::error::Error for LintsDenied {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_documented() {
        let mut codes: Vec<&str> = LINTS.iter().map(|l| l.code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), LINTS.len());
        for lint in LINTS {
            assert!(!lint.why.is_empty() && !lint.fix.is_empty(), "{}", lint.code);
        }
    }

    #[test]
    fn tokens_are_found_but_ordinary_words_are_not() {
        let text = "a = 1\ntoken = \"ghp_0123456789abcdefghij\"\nskills = [\"sk-\"]\n\
                    ssh-keys = [\"sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5 me\"]\n";
        assert_eq!(inline_secrets(text), vec![(2, "a GitHub token")]);
    }
}
