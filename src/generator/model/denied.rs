//! What a sandbox may not reach, named: the other side of its reach.
//!
//! Nothing here decides anything. The firewall (`render::egress`) accepts
//! from a sandbox's address exactly its [`Reach`] and rejects the rest; its
//! bridge table drops frames between sandboxes except to the service
//! sandboxes a reach names; the egress proxy refuses [`NEVER_DESTINATIONS`],
//! ports other than [`PROXY_WEB_PORTS`] and, for a domain list, every other
//! name. From that same data this names what it means for one sandbox (the
//! metadata server, private, link-local and loopback ranges, the ports the
//! hosts open, the other sandboxes), so `appliance explain` can say it.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::egress::{Egress, NEVER_DESTINATIONS, PROXY_WEB_PORTS, Reach};
use super::firewall::{FirewallRule, OVERLAY_INTERFACE};
use super::{Host, Sandbox};

/// What refuses a denied destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcer {
    /// `--network=none`: no interface but loopback.
    NoNetwork,
    /// The host's nftables table on the bridge: from a sandbox's address,
    /// only its reach is accepted.
    Firewall,
    /// The host's bridge table: no frames between two sandboxes beyond a
    /// reach.
    BridgeTable,
    /// The egress proxy's ACLs.
    Proxy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenialKind {
    /// Any network (a sandbox without one).
    Network,
    /// Anything not in the reach, opened directly.
    Direct,
    /// An address range, directly or through the proxy.
    Range,
    /// A port that this host or another appliance host opens.
    HostPort,
    /// Another sandbox of the same host.
    Sandbox,
    /// Through the proxy, a port other than the web's.
    ProxyPort,
    /// Through the proxy, a name not in the egress list.
    ProxyName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub kind: DenialKind,
    pub target: String,
    pub why: String,
    pub enforced_by: Vec<Enforcer>,
}

fn denial(kind: DenialKind, target: String, why: String, enforced_by: &[Enforcer]) -> Denial {
    Denial {
        kind,
        target,
        why,
        enforced_by: enforced_by.to_vec(),
    }
}

/// What `sandbox`, on `host`, may not reach; `hosts` are all the
/// appliance's hosts (`host` among them).
pub fn denied<'a>(hosts: impl IntoIterator<Item = &'a Host>, host: &Host, sandbox: &Sandbox) -> Vec<Denial> {
    let Some(network) = &sandbox.network else {
        return vec![denial(
            DenialKind::Network,
            "any network".into(),
            "the sandbox has no interface but loopback".into(),
            &[Enforcer::NoNetwork],
        )];
    };
    let mut denied = vec![direct(&sandbox.egress)];
    denied.extend(ranges(sandbox, network.address));
    denied.extend(host_ports(host, sandbox));
    for other in hosts.into_iter().filter(|h| h.name != host.name) {
        denied.extend(other_host_ports(other, sandbox));
    }
    denied.extend(other_sandboxes(host, sandbox));
    denied.extend(through_proxy(&sandbox.egress));
    denied
}

fn direct(egress: &Egress) -> Denial {
    let why = if egress.uses_proxy() {
        "the internet only through the egress proxy; nothing else is routed"
    } else {
        "`egress = \"none\"`: nothing beyond the appliance's services"
    };
    denial(
        DenialKind::Direct,
        "anything not in the reach, opened directly".into(),
        why.into(),
        &[Enforcer::Firewall],
    )
}

/// Each of [`NEVER_DESTINATIONS`]: the firewall rejects it as it rejects
/// everything outside the reach (the bridge table, for the other sandboxes
/// in the range of the sandbox's own address), and the proxy refuses it by
/// address whatever name resolved to it.
fn ranges(sandbox: &Sandbox, address: Ipv4Addr) -> Vec<Denial> {
    NEVER_DESTINATIONS
        .iter()
        .map(|(range, why)| {
            let except = sandbox.reach.iter().any(|r| range_contains(range, r.address));
            let why = if except {
                format!("{why}; except the reach")
            } else {
                (*why).to_string()
            };
            let mut enforced = vec![Enforcer::Firewall];
            if range_contains(range, address) {
                enforced.push(Enforcer::BridgeTable);
            }
            if sandbox.egress.uses_proxy() {
                enforced.push(Enforcer::Proxy);
            }
            denial(DenialKind::Range, (*range).to_string(), why, &enforced)
        })
        .collect()
}

/// Whether an IPv4 `a.b.c.d/n` range holds `address`; IPv6 ranges never do.
fn range_contains(range: &str, address: Ipv4Addr) -> bool {
    let Some((base, prefix)) = range.split_once('/') else {
        return false;
    };
    let (Ok(base), Ok(prefix)) = (base.parse::<Ipv4Addr>(), prefix.parse::<u32>()) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0);
    u32::from(address) & mask == u32::from(base) & mask
}

/// Whether the reach opens this firewall rule's port at one of `addresses`.
fn reached(reach: &[Reach], rule: &FirewallRule, addresses: &[Ipv4Addr]) -> bool {
    reach
        .iter()
        .any(|r| addresses.contains(&r.address) && r.protocol == rule.protocol && r.port == rule.port)
}

/// The rule's reason, and where the host opens the port.
fn port_why(rule: &FirewallRule) -> String {
    let interface = rule.interface.as_deref().unwrap_or("every interface");
    format!("{} (open on {interface})", rule.reason)
}

/// The ports this host's firewall opens that the sandbox's reach does not
/// name: the bridge input chain rejects them from a sandbox.
fn host_ports(host: &Host, sandbox: &Sandbox) -> Vec<Denial> {
    let own: Vec<Ipv4Addr> = std::iter::once(host.network_address)
        .chain(host.overlay_address)
        .collect();
    unreached_ports(sandbox, host.firewall.iter(), &own, |rule| {
        format!("host {} {}/{}", host.name, rule.protocol, rule.port)
    })
}

/// The ports another host opens on its overlay address (or on every
/// interface) that the reach does not name: routed, they are rejected.
fn other_host_ports(other: &Host, sandbox: &Sandbox) -> Vec<Denial> {
    let Some(address) = other.overlay_address else {
        return Vec::new();
    };
    let on_overlay = other
        .firewall
        .iter()
        .filter(|rule| rule.interface.as_deref().is_none_or(|i| i == OVERLAY_INTERFACE));
    unreached_ports(sandbox, on_overlay, &[address], |rule| {
        format!("host {} {address} {}/{}", other.name, rule.protocol, rule.port)
    })
}

/// Of a host's open `rules`, those the sandbox's reach does not name at
/// `addresses`, each a port the firewall refuses; `target` names it.
fn unreached_ports<'r>(
    sandbox: &Sandbox,
    rules: impl Iterator<Item = &'r FirewallRule>,
    addresses: &[Ipv4Addr],
    target: impl Fn(&FirewallRule) -> String,
) -> Vec<Denial> {
    rules
        .filter(|rule| !reached(&sandbox.reach, rule, addresses))
        .map(|rule| {
            denial(
                DenialKind::HostPort,
                target(rule),
                port_why(rule),
                &[Enforcer::Firewall],
            )
        })
        .collect()
}

/// The host's other sandboxes; a service sandbox the reach names stays
/// closed beyond the reached ports.
fn other_sandboxes(host: &Host, sandbox: &Sandbox) -> Vec<Denial> {
    host.sandboxes
        .iter()
        .filter(|other| other.name != sandbox.name)
        .map(|other| match &other.network {
            None => denial(
                DenialKind::Sandbox,
                format!("sandbox {}", other.name),
                "it has no network".into(),
                &[Enforcer::NoNetwork],
            ),
            Some(network) => {
                let ports: Vec<String> = sandbox
                    .reach
                    .iter()
                    .filter(|r| r.address == network.address)
                    .map(|r| format!("{}/{}", r.protocol, r.port))
                    .collect();
                let beyond = if ports.is_empty() {
                    String::new()
                } else {
                    format!(" beyond {}", ports.join(", "))
                };
                denial(
                    DenialKind::Sandbox,
                    format!("sandbox {} at {}{beyond}", other.name, network.address),
                    "sandboxes do not talk to each other".into(),
                    &[Enforcer::BridgeTable],
                )
            }
        })
        .collect()
}

fn through_proxy(egress: &Egress) -> Vec<Denial> {
    let mut denied = Vec::new();
    if !egress.uses_proxy() {
        return denied;
    }
    let ports: Vec<String> = PROXY_WEB_PORTS.iter().map(u16::to_string).collect();
    denied.push(denial(
        DenialKind::ProxyPort,
        format!("through the proxy, ports other than {}", ports.join(", ")),
        "the proxy opens web ports only".into(),
        &[Enforcer::Proxy],
    ));
    if let Egress::Domains(domains) = egress {
        denied.push(denial(
            DenialKind::ProxyName,
            "through the proxy, names other than the egress list".into(),
            format!("only {}, by name: an address in the URL is no name", domains.join(", ")),
            &[Enforcer::Proxy],
        ));
    }
    denied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_hold_their_addresses_only() {
        let bridge = Ipv4Addr::new(10, 88, 0, 1);
        assert!(range_contains("10.0.0.0/8", bridge));
        assert!(!range_contains("172.16.0.0/12", bridge));
        assert!(range_contains("172.16.0.0/12", Ipv4Addr::new(172, 30, 0, 1)));
        assert!(range_contains("169.254.0.0/16", Ipv4Addr::new(169, 254, 169, 254)));
        assert!(!range_contains("fc00::/7", bridge));
        assert!(range_contains("0.0.0.0/0", bridge));
    }
}
