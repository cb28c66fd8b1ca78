//! Egress policy: what each sandbox may reach, derived once from the spec.
//!
//! The same [`Reach`] list feeds the host firewall (`render::egress`), the
//! egress proxy's ACLs, the sandboxes' proxy environment and
//! `appliance explain`, so what is enforced and what is shown cannot drift.
//!
//! Nothing is enforced inside a sandbox: iptables in a container's own
//! network namespace is invisible to gVisor's netstack (gVisor #7469), and
//! an owned agent could change it anyway. Enforcement lives on the host: an
//! nftables ruleset on the appliance bridge and a filtering forward proxy.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

use serde::Serialize;
use toml::Spanned;

use super::build::Builder;
use crate::generator::spec::schema::{AgentSpec, EgressSpec};

/// The egress proxy's port, on the bridge address of each host.
pub const PROXY_PORT: u16 = 3128;
/// Where the egress proxy logs each request (squid's native format); the
/// warden reads the denials from it.
pub const PROXY_ACCESS_LOG: &str = "/var/log/squid/access.log";

/// The only destination ports the proxy connects to, for GET and CONNECT
/// alike (squid's `web_ports`).
pub const PROXY_WEB_PORTS: &[u16] = &[80, 443];

/// What one sandbox may reach beyond the appliance's own services.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Egress {
    /// Only Matrix and inference; no proxy, no resolver.
    None,
    /// Any public host, through the proxy; never a private, loopback,
    /// link-local, CGNAT, multicast or metadata address. Also the bridge's
    /// resolver (see [`common_reach`]).
    Web,
    /// Only these host names (and, for `*.name`, its subdomains), through
    /// the proxy, with the same address rules as `web`.
    Domains(Vec<String>),
}

impl Egress {
    pub fn uses_proxy(&self) -> bool {
        *self != Egress::None
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Egress::None => "none (appliance services only)".into(),
            Egress::Web => "web (public internet through the egress proxy)".into(),
            Egress::Domains(domains) => format!("domains through the egress proxy: {}", domains.join(", ")),
        }
    }
}

/// Destinations the proxy never connects to, whatever a name resolves to.
/// Each with why; the firewall drops them from the bridge as well.
pub const NEVER_DESTINATIONS: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network"),
    ("10.0.0.0/8", "private (the appliance bridge and overlay live here)"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback (Synapse and Ollama listen here)"),
    (
        "169.254.0.0/16",
        "link-local, including the cloud metadata server 169.254.169.254",
    ),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
    ("::/128", "unspecified: a connection to it reaches this host"),
    ("::1/128", "loopback"),
    ("64:ff9b::/96", "NAT64: would bypass the IPv4 rules"),
    (
        "fc00::/7",
        "unique local (private), including fd00:ec2::254, the IPv6 metadata address of some clouds",
    ),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// What a [`Reach`] opens: one of the services a sandbox may use. The
/// variants are in the order of their names, so reach lists sort as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReachService {
    /// The bridge's resolver (`egress = "web"` only).
    Dns,
    /// The host's egress proxy.
    EgressProxy,
    /// The crawler's page extraction backend.
    Extract,
    /// The agent's model server.
    Inference,
    /// The agent's homeserver.
    Matrix,
    /// The crawler's search backend.
    Search,
}

impl ReachService {
    /// As the spec's documentation and the firewall's comments name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReachService::Dns => "dns",
            ReachService::EgressProxy => "egress-proxy",
            ReachService::Extract => "extract",
            ReachService::Inference => "inference",
            ReachService::Matrix => "matrix",
            ReachService::Search => "search",
        }
    }
}

impl std::fmt::Display for ReachService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a sandbox may connect to, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Reach {
    pub service: ReachService,
    pub address: Ipv4Addr,
    pub protocol: &'static str,
    pub port: u16,
    pub why: String,
}

impl Reach {
    /// A TCP service at `at`.
    pub fn tcp(service: ReachService, at: SocketAddrV4, why: &str) -> Reach {
        Reach {
            service,
            address: *at.ip(),
            protocol: "tcp",
            port: at.port(),
            why: why.to_string(),
        }
    }
}

/// Where an agent's own services are, as its sandbox sees them.
pub struct Services {
    pub matrix: SocketAddrV4,
    pub inference: Option<SocketAddrV4>,
    /// The bridge address: DNS and the egress proxy.
    pub gateway: Ipv4Addr,
}

/// The reach of an agent's own sandbox.
pub fn agent_reach(services: &Services, egress: &Egress) -> Vec<Reach> {
    let mut reach = vec![Reach::tcp(
        ReachService::Matrix,
        services.matrix,
        "the agent's chat channel",
    )];
    if let Some(inference) = services.inference {
        reach.push(Reach::tcp(ReachService::Inference, inference, "the agent's model"));
    }
    reach.extend(common_reach(services.gateway, egress));
    reach.sort();
    reach
}

/// The reach of a code sandbox with `code-network = true`: no Matrix, no
/// model, only what the agent's egress policy allows.
pub fn code_reach(gateway: Ipv4Addr, egress: &Egress) -> Vec<Reach> {
    let mut reach = common_reach(gateway, egress);
    reach.sort();
    reach
}

/// The resolver is reached only with `egress = "web"`: it forwards to the
/// host's resolvers, so a query is a way out (data in the name, to a
/// server the sandbox picks by choosing the domain). A sandbox that may
/// open any public host through the proxy gains nothing from that; one
/// with a domain list or none would, so it gets no resolver at all (the
/// proxy resolves names for it). Hermes needs it: its web tools resolve a
/// URL's name themselves before fetching, and refuse what does not resolve.
fn common_reach(gateway: Ipv4Addr, egress: &Egress) -> Vec<Reach> {
    let mut reach = Vec::new();
    if *egress == Egress::Web {
        for protocol in ["udp", "tcp"] {
            reach.push(Reach {
                service: ReachService::Dns,
                address: gateway,
                protocol,
                port: super::build::DNS_PORT,
                why: "the bridge's resolver, forwarding to the host's: with `web` egress a name query \
                      opens no way out the proxy does not already give"
                    .into(),
            });
        }
    }
    if egress.uses_proxy() {
        reach.push(Reach {
            service: ReachService::EgressProxy,
            address: gateway,
            protocol: "tcp",
            port: PROXY_PORT,
            why: format!("egress: {}", egress.describe()),
        });
    }
    reach
}

/// The proxy variables a sandbox's runtimes honour. `direct` are the
/// addresses reached without the proxy (Matrix, inference): the proxy
/// refuses private addresses, so sending them there would break local
/// inference (NemoClaw's users hit exactly that).
/// `extra`: variables the agent's kind needs besides them
/// ([`crate::generator::kinds::SandboxNeeds::proxy_env`]).
pub fn proxy_environment(
    gateway: Ipv4Addr,
    direct: &[Ipv4Addr],
    extra: Option<&[(&str, &str)]>,
) -> BTreeMap<String, String> {
    let proxy = format!("http://{gateway}:{PROXY_PORT}");
    let mut no_proxy: Vec<String> = direct.iter().map(|a| a.to_string()).collect();
    no_proxy.extend(["127.0.0.1".to_string(), "localhost".to_string()]);
    no_proxy.dedup();
    let no_proxy = no_proxy.join(",");
    let mut env = BTreeMap::new();
    // Go, Python and curl read different spellings; set both.
    for key in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        env.insert(key.to_string(), proxy.clone());
    }
    env.insert("NO_PROXY".into(), no_proxy.clone());
    env.insert("no_proxy".into(), no_proxy);
    for (key, value) in extra.unwrap_or_default() {
        env.insert(key.to_string(), value.to_string());
    }
    env
}

/// The proxy URL for Chromium's `--proxy-server`.
pub fn proxy_url(gateway: Ipv4Addr) -> String {
    format!("http://{gateway}:{PROXY_PORT}")
}

/// The default when the spec says nothing: `none` for every kind. Any way
/// out of the appliance is a choice the spec makes and says why.
pub fn default_egress() -> Egress {
    Egress::None
}

fn span<T>(value: &Spanned<T>) -> Range<usize> {
    value.span()
}

/// Whether an agent's `egress`, as written, sends it through the proxy
/// (for the port check, which runs before agents are resolved).
pub(super) fn spec_uses_proxy(agent: &AgentSpec) -> bool {
    match agent.egress.as_ref().map(|e| e.get_ref()) {
        None => default_egress().uses_proxy(),
        Some(EgressSpec::Keyword(word)) => word == "web",
        Some(EgressSpec::Domains(list)) => !list.is_empty(),
    }
}

/// Validates `egress` of one agent.
pub(super) fn resolve(b: &mut Builder, agent: &AgentSpec) -> Egress {
    let Some(spec) = &agent.egress else {
        return default_egress();
    };
    match spec.get_ref() {
        EgressSpec::Keyword(word) if word == "none" => Egress::None,
        EgressSpec::Keyword(word) if word == "web" => Egress::Web,
        EgressSpec::Keyword(word) => {
            b.error(
                span(spec),
                format!("unknown egress `{word}`"),
                "use \"none\", \"web\" or a list of domains such as [\"api.github.com\"]",
            );
            Egress::None
        }
        EgressSpec::Domains(list) if list.is_empty() => {
            b.error(
                span(spec),
                "`egress` lists no domain",
                "write `egress = \"none\"` for no egress, or list the domains",
            );
            Egress::None
        }
        EgressSpec::Domains(list) => {
            let mut domains = Vec::new();
            for domain in list {
                match crate::common::hostnames::domain_problem(domain.get_ref()) {
                    Some((problem, hint)) => b.error(
                        span(domain),
                        format!("egress domain `{}` {problem}", domain.get_ref()),
                        hint,
                    ),
                    None => domains.push(domain.get_ref().to_ascii_lowercase()),
                }
            }
            domains.sort();
            domains.dedup();
            Egress::Domains(domains)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_and_matrix_bypass_the_proxy() {
        let gw = Ipv4Addr::new(10, 88, 0, 1);
        let env = proxy_environment(gw, &[gw], Some(&[("NODE_USE_ENV_PROXY", "1")]));
        assert_eq!(env["HTTPS_PROXY"], "http://10.88.0.1:3128");
        assert_eq!(env["NO_PROXY"], "10.88.0.1,127.0.0.1,localhost");
        assert_eq!(env["NODE_USE_ENV_PROXY"], "1");
        assert!(!proxy_environment(gw, &[gw], None).contains_key("NODE_USE_ENV_PROXY"));
    }
}
