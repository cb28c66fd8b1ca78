//! Host ports: which host serves what (SSH, WireGuard, the DNS resolver, the egress proxy,
//! Matrix, Ollama, published agent gateways), and no port used twice.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;

use super::addressing::Endpoints;
use super::{Builder, DNS_PORT, PAIRING_PORT, SSH_PORT, WEB_CLIENT_PORT, WIREGUARD_PORT, span};
use crate::generator::kinds;
use crate::generator::model::Host;

/// Ports claimed on one host: (protocol, port) -> who, and where in the spec.
type PortClaims = BTreeMap<(&'static str, u16), (String, Range<usize>)>;

/// Host ports by protocol: a TCP service and WireGuard's UDP port do not clash.
#[derive(Default)]
struct Ports(BTreeMap<String, PortClaims>);

impl Ports {
    fn claim(
        &mut self,
        b: &mut Builder,
        host: &str,
        protocol: &'static str,
        port: u16,
        what: String,
        at: Range<usize>,
    ) {
        let host_ports = self.0.entry(host.to_string()).or_default();
        if let Some((other, _)) = host_ports.get(&(protocol, port)) {
            b.error(
                at,
                format!("{protocol} port {port} on host `{host}` is used by both {other} and {what}"),
                "give one of them another port",
            );
        } else {
            host_ports.insert((protocol, port), (what, at));
        }
    }
}

pub(super) fn check(b: &mut Builder, hosts: &BTreeMap<String, Host>, linked: bool, endpoints: &Endpoints) {
    let mut ports = Ports::default();
    host_services(b, &mut ports, hosts, linked);
    let spec = b.spec;
    let matrix_spec = spec.matrix.get_ref();
    not_zero(b, "[matrix]", matrix_spec.port.as_ref());
    if let Some(inference) = &spec.inference {
        not_zero(b, "[inference]", inference.get_ref().port.as_ref());
    }
    let matrix_at = matrix_spec.port.as_ref().map_or_else(|| span(&matrix_spec.host), span);
    if hosts.contains_key(&endpoints.matrix_host) {
        let what = "the Matrix homeserver".into();
        ports.claim(
            b,
            &endpoints.matrix_host,
            "tcp",
            endpoints.matrix_port,
            what,
            matrix_at.clone(),
        );
        let what = "the admins' web client".into();
        ports.claim(
            b,
            &endpoints.matrix_host,
            "tcp",
            WEB_CLIENT_PORT,
            what,
            matrix_at.clone(),
        );
        if linked {
            let what = "the pairing server".into();
            ports.claim(b, &endpoints.matrix_host, "tcp", PAIRING_PORT, what, matrix_at);
        }
    }
    if let (Some(inference), Some(host)) = (&spec.inference, &endpoints.inference_host) {
        let inference = inference.get_ref();
        let at = inference.port.as_ref().map_or_else(|| span(&inference.host), span);
        if hosts.contains_key(host) {
            ports.claim(b, host, "tcp", endpoints.inference_port, "Ollama".into(), at);
        }
    }
    published(b, &mut ports, hosts);
}

/// Port 0 asks the kernel for any free port: the sandboxes could not know
/// where the service listens.
fn not_zero(b: &mut Builder, table: &str, port: Option<&Spanned<u16>>) {
    if let Some(port) = port.filter(|p| *p.get_ref() == 0) {
        b.error(
            span(port),
            format!("`{table}` port 0 is not a port a service can be reached at"),
            "remove `port` for the default, or use a port between 1 and 65535",
        );
    }
}

/// What every host runs: SSH, WireGuard when hosts are linked, and the
/// sandboxes' DNS resolver where agents run, the egress proxy where one has egress.
fn host_services(b: &mut Builder, ports: &mut Ports, hosts: &BTreeMap<String, Host>, linked: bool) {
    let spec = b.spec;
    let appliance_span = span(&spec.appliance.name);
    let hosts_with_agents: BTreeSet<&str> = spec.agents.values().map(|a| a.host.get_ref().as_str()).collect();
    for host in hosts.values() {
        ports.claim(b, &host.name, "tcp", SSH_PORT, "SSH".into(), appliance_span.clone());
        if linked {
            let what = "WireGuard".into();
            ports.claim(b, &host.name, "udp", WIREGUARD_PORT, what, appliance_span.clone());
        }
        let proxied = spec
            .agents
            .values()
            .any(|a| a.host.get_ref() == &host.name && crate::generator::model::egress::spec_uses_proxy(a));
        if proxied {
            let what = "the sandboxes' egress proxy".into();
            let port = crate::generator::model::PROXY_PORT;
            ports.claim(b, &host.name, "tcp", port, what, appliance_span.clone());
        }
        if hosts_with_agents.contains(host.name.as_str()) {
            let what = "the sandboxes' DNS resolver".into();
            ports.claim(b, &host.name, "tcp", DNS_PORT, what, appliance_span.clone());
        }
    }
}

/// Agents' `publish` ports: OpenClaw's gateway only, never port 0.
fn published(b: &mut Builder, ports: &mut Ports, hosts: &BTreeMap<String, Host>) {
    let spec = b.spec;
    for (name, agent) in &spec.agents {
        if let Some(port) = agent.publish.first()
            && kinds::of(*agent.kind.get_ref()).supports().gateway.is_none()
        {
            b.error(
                span(port),
                format!(
                    "agent `{}` has no gateway to publish: only {}",
                    name.get_ref(),
                    gateways()
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
                let what = format!("agent `{}`", name.get_ref());
                ports.claim(b, agent.host.get_ref(), "tcp", *port.get_ref(), what, span(port));
            }
        }
    }
}

/// The kinds that serve a gateway, for messages: "OpenClaw serves one (its
/// control UI)".
fn gateways() -> String {
    let serving: Vec<String> = kinds::ALL
        .iter()
        .filter_map(|k| {
            k.supports()
                .gateway
                .as_ref()
                .map(|g| format!("{} serves one ({})", k.label(), g.serves))
        })
        .collect();
    serving.join(", ")
}
