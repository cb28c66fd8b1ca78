//! `credentials` of `[agents.*]` (docs/spec.md): each service's token file
//! on the agent's host, and the hosts the egress proxy adds it on.

use toml::Spanned;

use super::{Builder, span};
use crate::generator::model::Egress;
use crate::generator::model::credentials::{Credential, facts, placeholder};
use crate::generator::spec::schema::AgentSpec;

/// Every credential of `agent`; each problem reported at its entry.
pub(super) fn resolve(b: &mut Builder, name: &Spanned<String>, agent: &AgentSpec, egress: &Egress) -> Vec<Credential> {
    let mut credentials = Vec::new();
    for (service, file) in &agent.credentials {
        let service = *service.get_ref();
        let facts = facts(service);
        if let Some(problem) = token_file_problem(file.get_ref()) {
            b.error(
                span(file),
                format!(
                    "agent `{}`: the `{service}` token file `{}` {problem}",
                    name.get_ref(),
                    file.get_ref()
                ),
                "name the file on the agent's host that holds the token, e.g. \"/var/lib/appliance/credentials/github-token\"",
            );
            continue;
        }
        if let Some(forger) = address_forger(b, agent) {
            b.error(
                span(file),
                format!(
                    "agent `{}`: the proxy adds its `{service}` credential to requests from its sandbox's address, \
                     but agent `{forger}` on the same host has `code-network = true`, whose code sandbox has raw \
                     sockets on the bridge and could send from that address",
                    name.get_ref()
                ),
                format!("remove `code-network` from `{forger}`, or put the two agents on different hosts"),
            );
            continue;
        }
        let hosts: Vec<String> = facts
            .hosts
            .iter()
            .filter(|host| allows(egress, host))
            .map(|host| host.to_string())
            .collect();
        if hosts.is_empty() {
            b.error(
                span(file),
                format!(
                    "agent `{}` has a `{service}` credential, but its `egress` reaches none of the hosts it is added on ({})",
                    name.get_ref(),
                    facts.hosts.join(", ")
                ),
                format!("add \"{}\" to its `egress`, or remove the credential", facts.hosts[0]),
            );
            continue;
        }
        credentials.push(Credential {
            service,
            variable: facts.variable.to_string(),
            placeholder: placeholder(name.get_ref(), service),
            hosts,
            token_file: file.get_ref().clone(),
        });
    }
    credentials
}

/// An agent on the same host whose code sandbox joins the bridge with raw
/// sockets (`code-network`): it could forge any address there, and the
/// proxy knows a credential's sandbox by its address alone.
fn address_forger(b: &Builder, agent: &AgentSpec) -> Option<String> {
    b.spec
        .agents
        .iter()
        .find(|(_, other)| other.host.get_ref() == agent.host.get_ref() && other.code_network())
        .map(|(name, _)| name.get_ref().clone())
}

/// Whether `egress` lets the agent reach `host` (a name, no wildcard); a
/// listed `*.name` is the name and its subdomains, as the proxy reads it.
fn allows(egress: &Egress, host: &str) -> bool {
    match egress {
        Egress::None => false,
        Egress::Web => true,
        Egress::Domains(domains) => domains.iter().any(|domain| match domain.strip_prefix("*.") {
            Some(parent) => host == parent || host.strip_suffix(parent).is_some_and(|rest| rest.ends_with('.')),
            None => domain == host,
        }),
    }
}

/// Why a token file path is refused, if it is. It lands in a shell script
/// of modules/egress.nix and in the proxy's unit, so it is kept to plain
/// absolute paths; never in the Nix store (world-readable).
fn token_file_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("is not an absolute path");
    }
    if path.len() > 255 {
        return Some("is longer than 255 characters");
    }
    if !path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
    {
        return Some("has a character other than letters, digits, `/`, `.`, `_` and `-`");
    }
    if path
        .split('/')
        .skip(1)
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Some("has an empty, `.` or `..` component");
    }
    if path.starts_with("/nix/store/") {
        return Some("is in the Nix store, which every user of the host can read");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_plain_absolute_paths_outside_the_store() {
        assert_eq!(token_file_problem("/var/lib/appliance/credentials/github-token"), None);
        assert_eq!(token_file_problem("/run/agenix/gh_token.2"), None);
        for refused in [
            "relative/token",
            "/run/keys/gh token",
            "/run/keys/$(id)",
            "/run/keys/../etc/shadow",
            "/run//keys",
            "/run/keys/",
            "/nix/store/abc-token",
            "/run/keys/\"quoted\"",
        ] {
            assert!(token_file_problem(refused).is_some(), "{refused}");
        }
    }

    #[test]
    fn a_credential_goes_only_to_hosts_the_egress_allows() {
        let domains = |list: &[&str]| Egress::Domains(list.iter().map(|d| d.to_string()).collect());
        assert!(allows(&Egress::Web, "api.github.com"));
        assert!(!allows(&Egress::None, "api.github.com"));
        assert!(allows(&domains(&["api.github.com"]), "api.github.com"));
        assert!(allows(&domains(&["*.github.com"]), "api.github.com"));
        assert!(allows(&domains(&["*.github.com"]), "github.com"));
        assert!(!allows(&domains(&["*.hub.com"]), "api.github.com"));
        assert!(!allows(&domains(&["github.com"]), "api.github.com"));
    }
}
