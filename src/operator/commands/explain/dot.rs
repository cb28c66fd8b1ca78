//! `appliance explain --format dot`: the hosts, their sandboxes and
//! services, and every path a sandbox may open, as a Graphviz graph.
//!
//! Edges come from each sandbox's [`Reach`] (what the firewall accepts from
//! its address), the proxy's way out ([`PROXY_WEB_PORTS`], public addresses
//! only), the resolver's upstream and the ports the spec publishes. Nothing
//! denied is drawn: what has no edge is refused. Every name from the spec
//! is escaped for a DOT quoted string; the output is sorted, so the same
//! spec draws the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use crate::generator::model::{
    APPROVAL_SOCKET_DIR, Appliance, BindSource, Egress, Host, OVERLAY_INTERFACE, PROXY_WEB_PORTS, Reach, ReachService,
    SOCKET_DIR, Sandbox, is_socket_dir,
};
use crate::generator::runsc::HostUds;

/// A node of the graph: its id, and the label lines.
struct Node {
    shape: &'static str,
    style: Option<&'static str>,
    label: Vec<String>,
}

/// Edges keyed by (from, to, ports, policy lines), each with its
/// protocols, so a service reached over UDP and TCP is one edge. A socket
/// has no port.
type Edges = BTreeMap<(String, String, Option<String>, Vec<String>), BTreeSet<String>>;

#[derive(Default)]
struct Graph {
    /// Host name (empty: outside every host) to its nodes by id.
    nodes: BTreeMap<String, BTreeMap<String, Node>>,
    edges: Edges,
}

const INTERNET: &str = "internet";
const OUTSIDE: &str = "outside";
const OVERLAY: &str = "overlay";

impl Graph {
    fn node(&mut self, host: &str, id: String, node: Node) {
        self.nodes
            .entry(host.to_string())
            .or_default()
            .entry(id)
            .or_insert(node);
    }

    fn edge(&mut self, from: &str, to: &str, protocol: &str, ports: Option<String>, policy: Vec<String>) {
        self.edges
            .entry((from.to_string(), to.to_string(), ports, policy))
            .or_default()
            .insert(protocol.to_string());
    }
}

fn sandbox_id(host: &Host, sandbox: &Sandbox) -> String {
    format!("{}/sandbox/{}", host.name, sandbox.name)
}

fn service_id(host: &Host, service: &str) -> String {
    format!("{}/service/{service}", host.name)
}

fn sandbox_node(sandbox: &Sandbox) -> Node {
    let address = sandbox
        .network
        .as_ref()
        .map_or_else(|| "no network".to_string(), |n| n.address.to_string());
    Node {
        shape: "box",
        // The appliance's own services (no agent) have rounded corners.
        style: sandbox.is_service().then_some("rounded"),
        label: vec![sandbox.name.clone(), address, sandbox.runtime.clone()],
    }
}

fn service_node(service: &str) -> Node {
    Node {
        shape: "ellipse",
        style: None,
        label: vec![service.to_string()],
    }
}

fn outside_node(label: &str) -> Node {
    Node {
        shape: "octagon",
        style: None,
        label: vec![label.to_string()],
    }
}

/// Where a reach entry lands: (host name, node id, node). The host's own
/// addresses are its services; a sandbox address on the bridge is that
/// sandbox; another host's overlay address is the sandbox publishing that
/// port there, or that host's service.
fn target<'a>(appliance: &'a Appliance, host: &'a Host, reach: &Reach) -> (&'a str, String, Node) {
    if reach.address == host.network_address || Some(reach.address) == host.overlay_address {
        return (
            &host.name,
            service_id(host, reach.service.as_str()),
            service_node(reach.service.as_str()),
        );
    }
    if let Some(sandbox) = host
        .sandboxes
        .iter()
        .find(|s| s.network.as_ref().is_some_and(|n| n.address == reach.address))
    {
        return (&host.name, sandbox_id(host, sandbox), sandbox_node(sandbox));
    }
    if let Some(other) = appliance
        .hosts
        .values()
        .find(|h| h.overlay_address == Some(reach.address))
    {
        let publisher = other
            .sandboxes
            .iter()
            .find(|s| s.publish_on == Some(reach.address) && s.publish.contains(&reach.port));
        return match publisher {
            Some(sandbox) => (&other.name, sandbox_id(other, sandbox), sandbox_node(sandbox)),
            None => (
                &other.name,
                service_id(other, reach.service.as_str()),
                service_node(reach.service.as_str()),
            ),
        };
    }
    // Not an address of the appliance: drawn as itself, outside every host.
    let address = reach.address.to_string();
    ("", format!("address/{address}"), outside_node(&address))
}

/// The policy lines of a path: the egress policy for the proxy, else the
/// service the reach names.
fn policy(reach: &Reach, egress: &Egress) -> Vec<String> {
    if reach.service != ReachService::EgressProxy {
        return vec![reach.service.to_string()];
    }
    match egress {
        Egress::None => vec!["egress: none".into()],
        Egress::Web => vec!["egress: web".into()],
        Egress::Domains(domains) => std::iter::once("egress: domains".to_string())
            .chain(domains.iter().cloned())
            .collect(),
    }
}

fn draw_sandbox(graph: &mut Graph, appliance: &Appliance, host: &Host, sandbox: &Sandbox) {
    let from = sandbox_id(host, sandbox);
    graph.node(&host.name, from.clone(), sandbox_node(sandbox));
    for reach in &sandbox.reach {
        let (target_host, to, node) = target(appliance, host, reach);
        graph.node(target_host, to.clone(), node);
        graph.edge(
            &from,
            &to,
            reach.protocol,
            Some(reach.port.to_string()),
            policy(reach, &sandbox.egress),
        );
        if reach.service == ReachService::EgressProxy {
            draw_proxy_way_out(graph, &to);
        }
        if reach.service == ReachService::Dns {
            let upstream = format!("{}/upstream-dns", host.name);
            graph.node(&host.name, upstream.clone(), service_node("the host's resolvers"));
            let forwarded = vec!["forwarded queries".into()];
            graph.edge(&to, &upstream, reach.protocol, Some(reach.port.to_string()), forwarded);
        }
    }
    draw_sockets(graph, host, sandbox, &from);
    for port in &sandbox.publish {
        let (source, label, on) = match sandbox.publish_on {
            Some(address) if Some(address) == host.overlay_address => (
                OVERLAY,
                format!("other appliance hosts ({OVERLAY_INTERFACE})"),
                address.to_string(),
            ),
            Some(address) => (OUTSIDE, "outside the appliance".to_string(), address.to_string()),
            None => (
                OUTSIDE,
                "outside the appliance".to_string(),
                "every interface".to_string(),
            ),
        };
        graph.node("", source.to_string(), outside_node(&label));
        let published = vec![format!("published on {on}")];
        graph.edge(source, &from, "tcp", Some(port.to_string()), published);
    }
}

/// A host socket directory this sandbox connects to (`--host-uds=open`) is
/// a path to the sandbox that serves it (`create`): the Docker daemon of
/// an agent's code execution.
fn draw_sockets(graph: &mut Graph, host: &Host, sandbox: &Sandbox, from: &str) {
    if sandbox.profile.host_uds != HostUds::Open {
        return;
    }
    for dir in socket_dirs(sandbox) {
        // The warden's approval broker serves the agent's side and
        // forwards to the code sandbox's own socket.
        let (served, mut notes) = match dir.strip_prefix(APPROVAL_SOCKET_DIR) {
            Some(rest) => (
                format!("{SOCKET_DIR}{rest}"),
                vec![
                    dir.to_string(),
                    "through the warden's approval broker: code runs after an admin's !approve".to_string(),
                ],
            ),
            None => (dir.to_string(), vec![dir.to_string()]),
        };
        let servers = host
            .sandboxes
            .iter()
            .filter(|s| s.profile.host_uds == HostUds::Create && socket_dirs(s).contains(&served.as_str()));
        for server in servers {
            let to = sandbox_id(host, server);
            graph.node(&host.name, to.clone(), sandbox_node(server));
            graph.edge(from, &to, "unix socket", None, std::mem::take(&mut notes));
        }
    }
}

fn socket_dirs(sandbox: &Sandbox) -> Vec<&str> {
    sandbox
        .binds
        .iter()
        .filter_map(|b| match &b.source {
            BindSource::Host(path) if is_socket_dir(path) => Some(path.as_str()),
            _ => None,
        })
        .collect()
}

/// The proxy opens the web's ports on public addresses, for every sandbox
/// whose policy allows the name.
fn draw_proxy_way_out(graph: &mut Graph, proxy: &str) {
    graph.node("", INTERNET.to_string(), outside_node("public internet"));
    let ports: Vec<String> = PROXY_WEB_PORTS.iter().map(u16::to_string).collect();
    let public = vec!["public addresses only".into()];
    graph.edge(proxy, INTERNET, "tcp", Some(ports.join(", ")), public);
}

/// The graph of the selected sandboxes (`explain::selected`).
pub fn graph(appliance: &Appliance, selected: &[(&Host, &Sandbox)]) -> String {
    let mut graph = Graph::default();
    for (host, sandbox) in selected {
        draw_sandbox(&mut graph, appliance, host, sandbox);
    }
    write(appliance, &graph)
}

/// A DOT quoted string: `"` and `\` escaped, a line break as `\n`, other
/// control characters as spaces.
pub fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A label of several lines, each escaped.
fn label(lines: &[String]) -> String {
    let quoted: Vec<String> = lines.iter().map(|l| quote(l)).collect();
    let inner: Vec<&str> = quoted.iter().map(|q| &q[1..q.len() - 1]).collect();
    format!("\"{}\"", inner.join("\\n"))
}

fn write_node(out: &mut String, indent: &str, id: &str, node: &Node) {
    let style = node.style.map_or_else(String::new, |s| format!(", style={s}"));
    let _ = writeln!(
        out,
        "{indent}{} [shape={}{style}, label={}];",
        quote(id),
        node.shape,
        label(&node.label)
    );
}

fn host_label(host: &Host) -> Vec<String> {
    let overlay = host
        .overlay_address
        .map_or_else(String::new, |a: Ipv4Addr| format!(", overlay {a}"));
    vec![
        format!("host {}", host.name),
        format!("bridge {}{overlay}", host.network_address),
    ]
}

fn write(appliance: &Appliance, graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&appliance.name));
    let title = [
        format!("appliance {}: what each sandbox may open", appliance.name),
        "the firewall and the egress proxy refuse everything not drawn".to_string(),
    ];
    let _ = writeln!(
        out,
        "  graph [rankdir=LR, fontname=\"Helvetica\", fontsize=11, labelloc=t, label={}];",
        label(&title)
    );
    out.push_str("  node [fontname=\"Helvetica\", fontsize=10];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");
    for (host_name, nodes) in &graph.nodes {
        let Some(host) = appliance.hosts.get(host_name) else {
            continue;
        };
        let _ = writeln!(out, "  subgraph {} {{", quote(&format!("cluster_{host_name}")));
        let _ = writeln!(out, "    label={};", label(&host_label(host)));
        for (id, node) in nodes {
            write_node(&mut out, "    ", id, node);
        }
        out.push_str("  }\n");
    }
    if let Some(nodes) = graph.nodes.get("") {
        for (id, node) in nodes {
            write_node(&mut out, "  ", id, node);
        }
    }
    for ((from, to, ports, policy), protocols) in &graph.edges {
        let protocols: Vec<&str> = protocols.iter().map(String::as_str).collect();
        let ports = ports.as_ref().map_or_else(String::new, |p| format!("/{p}"));
        let first = format!("{}{ports}", protocols.join("+"));
        let lines: Vec<String> = std::iter::once(first).chain(policy.iter().cloned()).collect();
        let _ = writeln!(out, "  {} -> {} [label={}];", quote(from), quote(to), label(&lines));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::model::denied::{DenialKind, denied};
    use crate::test_support::shipped;

    fn everything(appliance: &Appliance) -> Vec<(&Host, &Sandbox)> {
        appliance
            .hosts
            .values()
            .flat_map(|h| h.sandboxes.iter().map(move |s| (h, s)))
            .collect()
    }

    /// `(from, to, label lines)` of each edge, read back from the DOT text.
    fn edges(dot: &str) -> Vec<(String, String, Vec<String>)> {
        dot.lines()
            .filter_map(|line| {
                let (from, rest) = line.trim().strip_prefix('"')?.split_once("\" -> \"")?;
                let (to, rest) = rest.split_once("\" [label=\"")?;
                let label = rest.strip_suffix("\"];")?;
                let lines = label.split("\\n").map(str::to_string).collect();
                Some((from.to_string(), to.to_string(), lines))
            })
            .collect()
    }

    /// `check` of each sandbox of the shipped specs, with its appliance's
    /// drawing (`dot` and its edges).
    fn each_drawn_sandbox(mut check: impl FnMut(&Appliance, &Host, &Sandbox, &str, &[(String, String, Vec<String>)])) {
        for appliance in shipped() {
            let dot = graph(&appliance, &everything(&appliance));
            let edges = edges(&dot);
            for host in appliance.hosts.values() {
                for sandbox in &host.sandboxes {
                    check(&appliance, host, sandbox, &dot, &edges);
                }
            }
        }
    }

    /// Every sandbox is a node; each reach entry is an edge labelled with
    /// its protocol, port and policy; nothing else leaves a sandbox but its
    /// socket to its code sandbox.
    #[test]
    fn every_sandbox_is_a_node_and_every_reach_an_edge() {
        each_drawn_sandbox(|appliance, host, sandbox, dot, edges| {
            let id = sandbox_id(host, sandbox);
            assert!(dot.contains(&format!("  {} [shape=box", quote(&id))), "{id}\n{dot}");
            let from: Vec<_> = edges.iter().filter(|(f, _, _)| *f == id).collect();
            for reach in &sandbox.reach {
                let (_, to, _) = target(appliance, host, reach);
                let policy = policy(reach, &sandbox.egress);
                let drawn = from.iter().any(|(_, t, label)| {
                    let Some((protocols, port)) = label[0].split_once('/') else {
                        return false;
                    };
                    *t == to
                        && protocols.split('+').any(|p| p == reach.protocol)
                        && port == reach.port.to_string()
                        && label[1..] == policy[..]
                });
                assert!(drawn, "{id}: no edge for {reach:?}\n{dot}");
            }
            for (_, to, label) in &from {
                let in_reach = sandbox.reach.iter().any(|r| target(appliance, host, r).1 == *to);
                assert!(in_reach || label[0] == "unix socket", "{id} -> {to}: not in the reach");
            }
        });
    }

    /// No edge leaves a sandbox for what its denied list names: another
    /// sandbox the bridge table refuses, a port a host's firewall refuses.
    #[test]
    fn no_denied_path_is_drawn() {
        each_drawn_sandbox(|appliance, host, sandbox, _, edges| {
            if sandbox.network.is_none() {
                return;
            }
            let id = sandbox_id(host, sandbox);
            let list = denied(appliance.hosts.values(), host, sandbox);
            for (_, to, label) in edges.iter().filter(|(f, _, _)| *f == id) {
                if label[0] == "unix socket" {
                    continue;
                }
                let (protocols, port) = label[0].split_once('/').unwrap();
                let (to_host, kind, name) = {
                    let mut parts = to.splitn(3, '/');
                    (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
                };
                for protocol in protocols.split('+') {
                    let path = format!("{protocol}/{port}");
                    let refused = list.iter().any(|d| match d.kind {
                        DenialKind::Sandbox if kind == "sandbox" => {
                            d.target.starts_with(&format!("sandbox {name} at "))
                                && d.target
                                    .split(" beyond ")
                                    .nth(1)
                                    .is_none_or(|open| !open.split(", ").any(|p| p == path))
                        }
                        DenialKind::HostPort if kind == "service" => {
                            d.target.starts_with(&format!("host {to_host} ")) && d.target.ends_with(&format!(" {path}"))
                        }
                        _ => false,
                    });
                    assert!(!refused, "{id} -> {to} {path} is drawn but denied");
                }
            }
        });
    }

    #[test]
    fn quoting_escapes_quotes_backslashes_and_breaks() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote("a\\nb"), "\"a\\\\nb\"");
        assert_eq!(quote("two\nlines"), "\"two\\nlines\"");
        assert_eq!(quote("bell\u{7}"), "\"bell \"");
        assert_eq!(quote("ünïcode"), "\"ünïcode\"");
        assert_eq!(label(&["a\"".into(), "b\\".into()]), "\"a\\\"\\nb\\\\\"");
    }
}
