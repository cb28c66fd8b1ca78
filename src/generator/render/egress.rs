//! The egress layer of one host, from the sandboxes' [`Reach`] lists:
//!
//! - `firewall-inet.nft`: the body of nftables table `inet appliance_egress`.
//!   From the bridge, each sandbox address may open exactly its reach
//!   (Matrix, inference, DNS, the egress proxy) and nothing else: not the
//!   internet directly, not the metadata server, not the host's other ports
//!   or addresses, not other hosts.
//!   Its `output` chain keeps the egress proxy off this host's own addresses.
//! - `firewall-bridge.nft`: the body of table `bridge appliance_bridge`:
//!   sandboxes never exchange frames with each other, except a client's
//!   connections to the service sandboxes its reach names.
//! - `egress-proxy.conf`: squid's configuration, an ACL per sandbox address;
//!   no name is resolved before the sandbox may ask for it. With a
//!   credential the proxy adds (SECURITY.md, "Credentials at the proxy"),
//!   TLS is terminated for its hosts from its sandbox only, and the
//!   sandbox's placeholder is swapped for it; every other CONNECT is spliced.
//!
//! The NixOS module loads the tables with `networking.nftables.tables`, which
//! wraps each body in `table <family> <name> { ... }`; tests/egress.rs loads
//! the same bodies the same way in a network namespace.

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::{Tree, hash_header};
use crate::generator::model::credentials::{self, Credential};
use crate::generator::model::{
    BRIDGE_INTERFACE, Egress, Host, NEVER_DESTINATIONS, PROXY_ACCESS_LOG, PROXY_PORT, PROXY_WEB_PORTS, Reach, Sandbox,
    Subnet,
};

pub const INET_TABLE: &str = "appliance_egress";
pub const BRIDGE_TABLE: &str = "appliance_bridge";

pub fn render(host: &Host, subnet: &Subnet, tree: &mut Tree) {
    if !host.sandboxes.iter().any(|s| s.network.is_some()) {
        return;
    }
    let dir = format!("hosts/{}", host.name);
    tree.insert(format!("{dir}/firewall-inet.nft"), inet_table(host).into_bytes());
    tree.insert(
        format!("{dir}/firewall-bridge.nft"),
        bridge_table(host, subnet).into_bytes(),
    );
    if let Some(conf) = proxy_config(host) {
        tree.insert(format!("{dir}/egress-proxy.conf"), conf.into_bytes());
    }
}

/// Sandboxes with an address, with that address.
fn networked(host: &Host) -> impl Iterator<Item = (&Sandbox, Ipv4Addr)> {
    host.sandboxes
        .iter()
        .filter_map(|s| s.network.as_ref().map(|n| (s, n.address)))
}

/// Whether a reach target is this host itself (input hook) rather than
/// another host (forward hook, e.g. the hub's Matrix over WireGuard).
fn is_local(host: &Host, reach: &Reach) -> bool {
    reach.address == host.network_address || Some(reach.address) == host.overlay_address
}

fn accept_rule(out: &mut String, source: Ipv4Addr, sandbox: &str, reach: &Reach) {
    let _ = writeln!(
        out,
        "    ip saddr {source} ip daddr {} {} dport {} accept comment \"{sandbox}: {}\"",
        reach.address, reach.protocol, reach.port, reach.service
    );
}

pub fn inet_table(host: &Host) -> String {
    let mut out = hash_header(&format!(
        "Body of nftables table `inet {INET_TABLE}` on host `{}`: what each sandbox on {BRIDGE_INTERFACE} may open.",
        host.name
    ));
    let bridge = BRIDGE_INTERFACE;
    let _ = write!(
        out,
        "# Base chains accept by default: they only judge traffic from and to the\n\
         # bridge, and other tables (NixOS' firewall, Docker's) still apply.\n\
         # Sandbox traffic is rejected, not dropped: a refused connection fails\n\
         # at once instead of hanging the agent.\n\
         chain input {{\n    type filter hook input priority filter; policy accept;\n    \
         iifname \"{bridge}\" jump from_sandboxes\n}}\n\n\
         chain forward {{\n    type filter hook forward priority filter; policy accept;\n    \
         iifname \"{bridge}\" jump from_sandboxes_routed\n    \
         oifname \"{bridge}\" jump to_sandboxes\n}}\n\n"
    );
    let (mut local, mut routed, mut published) = (String::new(), String::new(), String::new());
    for (sandbox, address) in networked(host) {
        for reach in &sandbox.reach {
            let chain = if is_local(host, reach) { &mut local } else { &mut routed };
            accept_rule(chain, address, &sandbox.name, reach);
        }
        for port in &sandbox.publish {
            let target = sandbox.gateway_port.unwrap_or(*port);
            let _ = writeln!(
                published,
                "    ip daddr {address} tcp dport {target} accept comment \"{}: published port {port}\"",
                sandbox.name
            );
        }
    }
    let _ = write!(
        out,
        "# To this host: each sandbox's services on the bridge address; nothing\n\
         # else (no other port, no other address of this host, no IPv6).\n\
         chain from_sandboxes {{\n    ct state established,related accept\n{local}    \
         counter reject with icmpx type admin-prohibited comment \"anything else from a sandbox to this host\"\n}}\n\n\
         # Through this host: only services of other appliance hosts; never the\n\
         # internet (that goes through the egress proxy), the metadata server or\n\
         # private networks.\n\
         chain from_sandboxes_routed {{\n    ct state established,related accept\n{routed}    \
         counter reject with icmpx type admin-prohibited comment \"sandbox traffic routed anywhere else\"\n}}\n\n\
         # Into the bridge from elsewhere: replies, and declared published ports.\n\
         chain to_sandboxes {{\n    ct state established,related accept\n{published}    \
         counter drop comment \"new connections into the sandboxes\"\n}}\n"
    );
    if proxy_config(host).is_some() {
        out.push_str(&proxy_output_chain());
    }
    out
}

/// The user the egress proxy connects as (the nixpkgs squid service's,
/// `cache_effective_user` in egress-proxy.conf).
pub const PROXY_USER: &str = "squid";

/// The egress proxy connects for the sandboxes, so it must never connect to
/// this host itself: not on `::` or `0.0.0.0`, not on the uplink's own
/// (possibly public) address, none of which squid's `never_dst` can list,
/// since the host's addresses are not known when the spec is generated.
/// `fib daddr type local` knows them when the packet leaves. Two things
/// pass: DNS (the host's resolver may listen on loopback), and loopback
/// itself, which squid's processes talk to each other over (its helpers'
/// IPC: without it squid never starts listening) and which `never_dst`
/// refuses for every request (127.0.0.0/8, ::1).
fn proxy_output_chain() -> String {
    let rule = |family: &str, loopback: &str| {
        format!(
            "    meta skuid \"{PROXY_USER}\" fib daddr type local {family} daddr != {loopback} \
             meta l4proto {{ tcp, udp }} th dport != 53 \
             counter reject with icmpx type admin-prohibited comment \"the egress proxy to this host itself\"\n"
        )
    };
    format!(
        "\n# The egress proxy never connects to this host itself, by any of its\n\
         # addresses (squid's `never_dst` cannot list the ones not known when\n\
         # this was generated); its DNS queries to a local resolver pass, and\n\
         # loopback, where squid's own processes talk (never_dst refuses it).\n\
         chain output {{\n    type filter hook output priority filter; policy accept;\n{}{}}}\n",
        rule("ip", "127.0.0.0/8"),
        rule("ip6", "::1")
    )
}

/// The reach entries that are another sandbox on the bridge (the service
/// sandboxes: Ollama, SearXNG): `(source, sandbox, reach)`.
fn sandbox_to_sandbox(host: &Host) -> Vec<(Ipv4Addr, &str, &Reach)> {
    let services: Vec<Ipv4Addr> = networked(host)
        .map(|(_, a)| a)
        .filter(|a| *a != host.network_address)
        .collect();
    networked(host)
        .flat_map(|(sandbox, source)| {
            sandbox
                .reach
                .iter()
                .filter(|r| services.contains(&r.address))
                .map(move |r| (source, sandbox.name.as_str(), r))
        })
        .collect()
}

pub fn bridge_table(host: &Host, subnet: &Subnet) -> String {
    let mut out = hash_header(&format!(
        "Body of nftables table `bridge {BRIDGE_TABLE}` on host `{}`: sandboxes do not talk to each other, except to the service sandboxes their reach names.",
        host.name
    ));
    let mut allowed = String::new();
    for (source, sandbox, reach) in sandbox_to_sandbox(host) {
        allowed.push_str(&pair_rules(source, sandbox, reach));
    }
    let _ = write!(
        out,
        "# Frames between two ports of {BRIDGE_INTERFACE} never reach the IP hooks\n\
         # unless br_netfilter is loaded, so they are judged here (`meta ibrname`\n\
         # needs nft_meta_bridge, which not every kernel has: every port of this\n\
         # bridge is a sandbox of the appliance subnet {subnet}). Each sandbox\n\
         # still reaches the bridge address: that is input, not forward.\n\
         # Stateless, as the bridge family's conntrack is not on every kernel:\n\
         # a service answers on its port, but never opens a connection from it.\n\
         chain forward {{\n    type filter hook forward priority filter; policy accept;\n{allowed}    \
         counter drop comment \"every other frame between sandboxes: other connections, broadcast, multicast, IPv6\"\n}}\n"
    );
    out
}

/// The rules that let `source` (of `sandbox`) use one service of another
/// sandbox: the connection, its replies and the address resolution both
/// ways. Only TCP services exist between sandboxes; the replies are TCP
/// without a bare SYN, so the service cannot open a connection from its
/// port to a port the client listens on.
fn pair_rules(source: Ipv4Addr, sandbox: &str, reach: &Reach) -> String {
    assert_eq!(
        reach.protocol, "tcp",
        "{sandbox}: a sandbox-to-sandbox service is TCP (its replies are told from new connections by their flags)"
    );
    let (service, port, what) = (reach.address, reach.port, reach.service);
    format!(
        "    ip saddr {source} ip daddr {service} tcp dport {port} accept comment \"{sandbox}: {what}\"\n    \
         ip saddr {service} ip daddr {source} tcp sport {port} tcp flags & (syn | ack) != syn accept comment \"{sandbox}: {what} (replies, never a new connection)\"\n    \
         arp saddr ip {source} arp daddr ip {service} accept comment \"{sandbox}: {what} (address resolution)\"\n    \
         arp saddr ip {service} arp daddr ip {source} accept comment \"{sandbox}: {what} (address resolution)\"\n"
    )
}

/// squid's configuration, when any sandbox of the host uses the proxy.
pub fn proxy_config(host: &Host) -> Option<String> {
    let clients: Vec<(&Sandbox, Ipv4Addr)> = networked(host).filter(|(s, _)| s.egress.uses_proxy()).collect();
    if clients.is_empty() {
        return None;
    }
    let mut out = hash_header(&format!(
        "squid configuration of host `{}`: the egress proxy, one ACL per sandbox address.",
        host.name
    ));
    let bump = clients.iter().any(|(s, _)| !s.credentials.is_empty());
    let _ = write!(
        out,
        "\n# Only on the bridge address; the firewall lets only sandboxes with egress in.\n\
         {}\n\
         # What the nixpkgs squid service expects (its pid file, user and logs).\n\
         pid_filename /run/squid.pid\ncache_effective_user {PROXY_USER} {PROXY_USER}\ncache_log syslog\n\
         access_log stdio:{PROXY_ACCESS_LOG}\ncoredump_dir /var/cache/squid\n\n\
         # A filter, not a cache; and nothing about the sandbox leaks upstream.\n\
         cache deny all\nforwarded_for delete\nhttpd_suppress_version_string on\n\n",
        listener(host.network_address, bump)
    );
    out.push_str(
        "# Destinations never reached, by address: squid resolves the name and\n\
         # `dst` matches when any resolved address is in these ranges, so a public\n\
         # name that resolves to one is refused too. This host's other addresses\n\
         # (not known here) are refused by the firewall (chain `output` of table\n\
         # `inet appliance_egress`).\n",
    );
    for (range, why) in NEVER_DESTINATIONS {
        // squid has no trailing comments: the reason goes above.
        let _ = writeln!(out, "# {why}\nacl never_dst dst {range}");
    }
    let web_ports: Vec<String> = PROXY_WEB_PORTS.iter().map(u16::to_string).collect();
    let _ = write!(
        out,
        "\n# Ports 80 and 443 only, for GET and CONNECT alike: Node's fetch tunnels\n\
         # http:// URLs through CONNECT to port 80 too.\n\
         acl web_ports port {}\n\n",
        web_ports.join(" ")
    );
    for (sandbox, address) in &clients {
        client_acls(&mut out, sandbox, *address);
    }
    if bump {
        credential_rules(&mut out, &clients);
    }
    access_rules(&mut out, &clients);
    Some(out)
}

/// What the NixOS module replaces with the path of squid's certificate
/// generator helper (in the squid package it runs; tests/egress.rs puts
/// Debian's there).
pub const CERTGEN_MARKER: &str = "@SECURITY_FILE_CERTGEN@";

/// The `http_port` line and, with a credential to add, what terminating
/// TLS for its hosts needs: the appliance CA (made on the host at first
/// boot, never in the Nix store) and squid's certificate generator.
fn listener(address: Ipv4Addr, bump: bool) -> String {
    if !bump {
        return format!("http_port {address}:{PROXY_PORT}\n");
    }
    format!(
        "# `ssl-bump`: TLS is terminated only where `ssl_bump` below says so (the\n\
         # hosts a sandbox's credential is added on, from that sandbox), with\n\
         # certificates signed by the appliance CA, which only that sandbox trusts.\n\
         # Every other CONNECT is spliced: a plain tunnel, never decrypted.\n\
         http_port {address}:{PROXY_PORT} ssl-bump tls-cert={} tls-key={} \
         generate-host-certificates=on dynamic_cert_mem_cache_size=4MB\n\
         sslcrtd_program {CERTGEN_MARKER} -s {} -M 4MB\nsslcrtd_children 5\n",
        credentials::CA_CERT,
        credentials::CA_KEY,
        credentials::SSL_DB
    )
}

/// The ACL names of one credential of one sandbox.
fn credential_acls(sandbox: &str, credential: &Credential) -> [String; 3] {
    let name = format!("{}_{}", acl_name(sandbox), credential.service);
    [
        format!("credential_hosts_{name}"),
        format!("credential_tls_{name}"),
        format!("credential_placeholder_{name}"),
    ]
}

/// The ACLs every rule that adds a credential requires, all at once: the
/// sandbox's address, the credential's hosts, the placeholder in the
/// request and a request inside a terminated TLS connection (never plain
/// HTTP, where the token would cross the internet in the clear).
fn injection_acls(sandbox: &str, credential: &Credential) -> String {
    let [hosts, _, placeholder] = credential_acls(sandbox, credential);
    format!("sandbox_{} {hosts} {placeholder} credential_https", acl_name(sandbox))
}

/// The line of the proxy's include file for one credential, around the
/// real token: what goes before it and what after. The NixOS module writes
/// `before + token + after` at each start of the proxy from the token file
/// (modules/egress.nix, `credentials`), checking the token is letters,
/// digits and `_` only; the token never reaches the Nix store.
pub fn injection_line(sandbox: &str, credential: &Credential) -> (String, String) {
    let scheme = credentials::facts(credential.service).scheme;
    (
        format!("request_header_add Authorization \"{scheme} "),
        format!("\" {}", injection_acls(sandbox, credential)),
    )
}

/// Terminating TLS and adding each credential: for the credential's hosts,
/// from its sandbox only; every other CONNECT spliced.
fn credential_rules(out: &mut String, clients: &[(&Sandbox, Ipv4Addr)]) {
    out.push_str(
        "# Credentials added by the proxy: the sandbox holds a placeholder. Its\n\
         # CONNECT to one of the credential's hosts is peeked at (the TLS client\n\
         # hello) and terminated when the name it asks for is one of them too;\n\
         # a request inside carrying the placeholder has it replaced with the\n\
         # real credential, from the proxy's include file. Every other CONNECT,\n\
         # from every sandbox, is spliced at the first step, never decrypted;\n\
         # so is a CONNECT to port 80, and one that turns out not to be TLS\n\
         # (`on_unsupported_protocol`): it was allowed as a tunnel, it stays one.\n\
         acl tls_step1 at_step SslBump1\nacl credential_https proto HTTPS\nacl credential_port port 443\n",
    );
    let mut bump = String::new();
    let mut headers = String::new();
    for (sandbox, _) in clients {
        for credential in &sandbox.credentials {
            let [hosts, tls, placeholder] = credential_acls(&sandbox.name, credential);
            let client = format!("sandbox_{}", acl_name(&sandbox.name));
            let names = credential.hosts.join(" ");
            let _ = writeln!(
                out,
                "# {}: `{}` ({}) on {}, from the token file {}\n\
                 acl {hosts} dstdomain -n {names}\nacl {tls} ssl::server_name {names}\n\
                 acl {placeholder} req_header Authorization -i ^(token|bearer)[[:space:]]+{}$",
                sandbox.name,
                credential.service,
                credential.variable,
                credential.hosts.join(", "),
                credential.token_file,
                credential.placeholder,
            );
            let _ = writeln!(
                bump,
                "ssl_bump peek tls_step1 {client} credential_port {hosts}\nssl_bump bump {client} {tls}"
            );
            let _ = writeln!(
                headers,
                "request_header_access Authorization deny {}\ninclude {}",
                injection_acls(&sandbox.name, credential),
                credential.injection_file(&sandbox.name)
            );
        }
    }
    for (sandbox, _) in clients.iter().filter(|(s, _)| !s.credentials.is_empty()) {
        let _ = writeln!(
            bump,
            "on_unsupported_protocol tunnel sandbox_{}",
            acl_name(&sandbox.name)
        );
    }
    let _ = write!(
        out,
        "{bump}ssl_bump splice all\n\
         # The placeholder is taken out, and the include file (written when the\n\
         # proxy starts) adds the credential under the same conditions.\n{headers}\n"
    );
}

/// The ACLs of one sandbox: its address, its domain list and the
/// warden's grant file.
fn client_acls(out: &mut String, sandbox: &Sandbox, address: Ipv4Addr) {
    let client = acl_name(&sandbox.name);
    // The list itself is on the `acl` lines: a comment naming every
    // domain would pass squid's line length too.
    let described = match &sandbox.egress {
        Egress::Domains(domains) => format!("{} domains through the egress proxy", domains.len()),
        other => other.describe(),
    };
    let _ = writeln!(out, "# {}: {described}", sandbox.name);
    let _ = writeln!(out, "acl sandbox_{client} src {address}/32");
    let _ = writeln!(out, "acl proxy_clients src {address}/32");
    if let Egress::Domains(domains) = &sandbox.egress {
        for line in domain_acl_lines(&client, domains) {
            let _ = writeln!(out, "{line}");
        }
    }
    if let Some(file) = &sandbox.grants {
        // The warden's file (docs/warden.md, "Egress grants"): exact
        // names, one a line, read again at each reconfigure. The path
        // is the appliance's own, never the spec's words.
        let _ = writeln!(
            out,
            "# host names the admins granted {} for a while (`!allow`), written by the warden\n\
             acl grants_{client} dstdomain -n \"{file}\"",
            sandbox.name
        );
    }
    out.push('\n');
}

/// The rules, in order: what is refused without a DNS query first.
fn access_rules(out: &mut String, clients: &[(&Sandbox, Ipv4Addr)]) {
    out.push_str(
        "# The rules, in order. Every rule before `never_dst` is decided without\n\
         # a DNS query; `never_dst` resolves the requested name through the\n\
         # host's resolvers, which carries the name out of the appliance. So a\n\
         # name a sandbox may not ask for is refused before it: a domain-list\n\
         # sandbox's unlisted name never reaches a DNS server.\n\
         http_access deny manager\nhttp_access deny !web_ports\nhttp_access deny !proxy_clients\n",
    );
    for (sandbox, _) in clients {
        if let Some(deny) = unlisted_denial(sandbox) {
            let _ = writeln!(out, "{deny}");
        }
    }
    out.push_str("http_access deny never_dst\n");
    for (sandbox, _) in clients {
        let client = acl_name(&sandbox.name);
        match &sandbox.egress {
            Egress::Web => {
                let _ = writeln!(out, "http_access allow sandbox_{client}");
            }
            Egress::Domains(_) => {
                let _ = writeln!(out, "http_access allow sandbox_{client} domains_{client}");
                // After `never_dst`: a granted name that resolves to a
                // private, loopback, link-local or metadata address is
                // refused before this rule is read.
                if sandbox.grants.is_some() {
                    let _ = writeln!(out, "http_access allow sandbox_{client} grants_{client}");
                }
            }
            Egress::None => {}
        }
    }
    out.push_str("http_access deny all\n");
}

/// The `dstdomain` ACL of a domain list, one line per domain: each line
/// appends to the ACL, and a long list on one line would pass the length
/// squid reads a configuration line with. `-n`: never a reverse lookup, so
/// an address in the URL cannot pass as an allowed name.
fn domain_acl_lines(client: &str, domains: &[String]) -> Vec<String> {
    domains
        .iter()
        .map(|d| format!("acl domains_{client} dstdomain -n {}", squid_domain(d)))
        .collect()
}

/// `*.example.com` is squid's `.example.com` (the domain and its subdomains).
fn squid_domain(domain: &str) -> String {
    match domain.strip_prefix("*.") {
        Some(rest) => format!(".{rest}"),
        None => domain.to_string(),
    }
}

/// The rule that refuses a domain-list sandbox every name not on its list
/// (nor granted to it, when the warden may grant it names); `None` for
/// other sandboxes.
fn unlisted_denial(sandbox: &Sandbox) -> Option<String> {
    let Egress::Domains(_) = &sandbox.egress else {
        return None;
    };
    let client = acl_name(&sandbox.name);
    let granted = if sandbox.grants.is_some() {
        format!(" !grants_{client}")
    } else {
        String::new()
    };
    Some(format!("http_access deny sandbox_{client} !domains_{client}{granted}"))
}

fn acl_name(sandbox: &str) -> String {
    sandbox.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::each_shipped_host;

    /// Exactly the reach is accepted, each rule tied to a source address.
    #[test]
    fn the_firewall_accepts_exactly_each_sandboxs_reach() {
        each_shipped_host(|_, host| {
            let table = inet_table(host);
            let accepts: Vec<&str> = table
                .lines()
                .filter(|l| l.trim_end().ends_with("accept") || l.contains(" accept comment"))
                .filter(|l| !l.contains("ct state established,related"))
                .collect();
            let mut expected = 0;
            for (sandbox, address) in networked(host) {
                for reach in &sandbox.reach {
                    let rule = format!(
                        "ip saddr {address} ip daddr {} {} dport {} accept",
                        reach.address, reach.protocol, reach.port
                    );
                    assert_eq!(table.matches(&rule).count(), 1, "{}: {rule}\n{table}", sandbox.name);
                    expected += 1;
                }
                expected += sandbox.publish.len();
            }
            assert_eq!(
                accepts.len(),
                expected,
                "{}: an accept rule beyond the reach:\n{table}",
                host.name
            );
            for line in accepts {
                assert!(line.contains("ip saddr") || line.contains("published port"), "{line}");
            }
        });
    }

    #[test]
    fn the_proxy_refuses_never_destinations_before_any_allow() {
        each_shipped_host(|_, host| {
            let Some(conf) = proxy_config(host) else {
                assert!(!host.sandboxes.iter().any(|s| s.egress.uses_proxy()), "{}", host.name);
                return;
            };
            let deny = conf.find("http_access deny never_dst").unwrap();
            let first_allow = conf.find("http_access allow").unwrap();
            assert!(deny < first_allow, "{}", host.name);
            assert!(conf.trim_end().ends_with("http_access deny all"), "{}", host.name);
            for sandbox in &host.sandboxes {
                let acl = format!("acl sandbox_{} ", acl_name(&sandbox.name));
                let has_network = sandbox.network.is_some();
                assert_eq!(
                    conf.contains(&acl),
                    has_network && sandbox.egress.uses_proxy(),
                    "{}",
                    sandbox.name
                );
                if let Egress::Domains(domains) = &sandbox.egress {
                    let client = acl_name(&sandbox.name);
                    let allow = format!("http_access allow sandbox_{client} domains_{client}\n");
                    assert!(conf.contains(&allow), "{}", sandbox.name);
                    assert!(!conf.contains(&format!("http_access allow sandbox_{client}\n")));
                    for domain in domains {
                        assert!(conf.contains(&squid_domain(domain)), "{domain}");
                    }
                }
            }
        });
    }

    /// `never_dst` resolves the name: a domain-list sandbox's unlisted names
    /// are refused before it, and so is any client that is no sandbox with
    /// egress.
    #[test]
    fn unlisted_names_are_refused_before_the_proxy_resolves_them() {
        each_shipped_host(|_, host| {
            let Some(conf) = proxy_config(host) else { return };
            let resolves = conf.find("http_access deny never_dst").unwrap();
            let strangers = conf.find("http_access deny !proxy_clients\n").unwrap();
            assert!(strangers < resolves, "{}", host.name);
            for sandbox in host.sandboxes.iter().filter(|s| s.network.is_some()) {
                if let Some(deny) = unlisted_denial(sandbox) {
                    let at = conf
                        .find(&format!("{deny}\n"))
                        .unwrap_or_else(|| panic!("{}: {deny}", sandbox.name));
                    assert!(at < resolves, "{}", sandbox.name);
                }
            }
            // Before `never_dst`, only ACLs that never resolve a name.
            for line in conf[..resolves].lines().filter(|l| l.starts_with("http_access")) {
                assert!(!line.contains("never_dst"), "{line}");
            }
        });
    }

    /// Between sandboxes: each pair's request, its replies (never a bare
    /// SYN) and address resolution; every other frame is dropped.
    #[test]
    fn the_bridge_lets_a_service_answer_but_never_open_a_connection() {
        each_shipped_host(|appliance, host| {
            let table = bridge_table(host, &appliance.network);
            let pairs = sandbox_to_sandbox(host);
            let accepts: Vec<&str> = table.lines().filter(|l| l.contains(" accept comment")).collect();
            assert_eq!(accepts.len(), pairs.len() * 4, "{table}");
            for line in accepts.iter().filter(|l| l.contains(" sport ")) {
                assert!(line.contains("tcp flags & (syn | ack) != syn accept"), "{line}");
            }
            let last = table.lines().rev().nth(1).unwrap().trim();
            assert!(last.starts_with("counter drop comment"), "{table}");
        });
    }

    /// squid never connects to this host itself: the firewall holds its
    /// user's connections to local addresses, whatever they are.
    #[test]
    fn the_proxy_never_connects_to_this_host() {
        each_shipped_host(|_, host| {
            let table = inet_table(host);
            let rule = format!("meta skuid \"{PROXY_USER}\" fib daddr type local ip daddr != 127.0.0.0/8");
            assert_eq!(table.contains(&rule), proxy_config(host).is_some(), "{table}");
            if let Some(conf) = proxy_config(host) {
                assert!(conf.contains(&format!("cache_effective_user {PROXY_USER} ")), "{conf}");
                assert!(conf.contains("acl never_dst dst ::/128\n"), "{conf}");
            }
        });
    }

    /// A grant widens only its own sandbox, and only after `never_dst`;
    /// before it, a granted name is only let past the list check.
    #[test]
    fn grants_widen_one_sandbox_and_only_after_never_dst() {
        each_shipped_host(|_, host| {
            let Some(conf) = proxy_config(host) else { return };
            let never = conf.find("http_access deny never_dst\n").unwrap();
            for sandbox in &host.sandboxes {
                let client = acl_name(&sandbox.name);
                let acl = format!("acl grants_{client} dstdomain -n \"");
                let allow = format!("http_access allow sandbox_{client} grants_{client}\n");
                let Some(file) = &sandbox.grants else {
                    assert!(!conf.contains(&acl) && !conf.contains(&allow), "{}", sandbox.name);
                    continue;
                };
                assert!(host.runs_matrix && !sandbox.is_service(), "{}", sandbox.name);
                assert!(matches!(sandbox.egress, Egress::Domains(_)), "{}", sandbox.name);
                assert!(conf.contains(&format!("{acl}{file}\"\n")), "{conf}");
                let deny = format!("http_access deny sandbox_{client} !domains_{client} !grants_{client}\n");
                assert!(conf.find(&deny).unwrap() < never, "{conf}");
                assert!(conf.find(&allow).unwrap() > never, "{conf}");
                // Every rule naming the grants names their sandbox too.
                for line in conf.lines().filter(|l| l.contains(&format!("grants_{client}"))) {
                    assert!(
                        line.starts_with("acl ") || line.contains(&format!("sandbox_{client} ")),
                        "{line}"
                    );
                }
            }
        });
    }

    /// TLS is terminated only for a credential's hosts from its own
    /// sandbox, and the credential is added only inside it: every rule
    /// that bumps or touches `Authorization` names the sandbox, the
    /// credential's ACLs and (for headers) HTTPS; everything else splices.
    #[test]
    fn credentials_are_added_only_for_their_sandbox_hosts_and_tls() {
        let mut seen = 0;
        each_shipped_host(|_, host| {
            let Some(conf) = proxy_config(host) else { return };
            let with: Vec<&Sandbox> = host.sandboxes.iter().filter(|s| !s.credentials.is_empty()).collect();
            let listener = conf.lines().find(|l| l.starts_with("http_port ")).unwrap();
            assert_eq!(listener.contains(" ssl-bump "), !with.is_empty(), "{listener}");
            let bumps: Vec<&str> = conf.lines().filter(|l| l.starts_with("ssl_bump ")).collect();
            if with.is_empty() {
                assert!(bumps.is_empty() && !conf.contains("request_header"), "{conf}");
                return;
            }
            assert_eq!(bumps.last(), Some(&"ssl_bump splice all"), "{conf}");
            for line in &bumps[..bumps.len() - 1] {
                assert!(
                    line.starts_with("ssl_bump peek tls_step1 sandbox_") && line.contains(" credential_port ")
                        || line.starts_with("ssl_bump bump sandbox_"),
                    "{line}"
                );
                assert!(
                    line.contains(" credential_hosts_") || line.contains(" credential_tls_"),
                    "{line}"
                );
            }
            for sandbox in &with {
                let client = acl_name(&sandbox.name);
                for credential in &sandbox.credentials {
                    seen += 1;
                    let name = format!("{client}_{}", credential.service);
                    let hosts = credential.hosts.join(" ");
                    assert!(
                        conf.contains(&format!("acl credential_hosts_{name} dstdomain -n {hosts}\n")),
                        "{conf}"
                    );
                    assert!(
                        conf.contains(&format!("acl credential_tls_{name} ssl::server_name {hosts}\n")),
                        "{conf}"
                    );
                    assert!(
                        conf.contains(&format!("[[:space:]]+{}$\n", credential.placeholder)),
                        "the placeholder is matched whole: {conf}"
                    );
                    let (before, after) = injection_line(&sandbox.name, credential);
                    assert_eq!(before, "request_header_add Authorization \"token ");
                    let acls = format!(
                        "sandbox_{client} credential_hosts_{name} credential_placeholder_{name} credential_https"
                    );
                    assert_eq!(after, format!("\" {acls}"));
                    assert!(
                        conf.contains(&format!("request_header_access Authorization deny {acls}\n")),
                        "{conf}"
                    );
                    assert!(conf.contains(&format!("include {}\n", credential.injection_file(&sandbox.name))));
                    for domain in &credential.hosts {
                        match &sandbox.egress {
                            Egress::Domains(list) => assert!(list.contains(domain), "{domain}"),
                            other => assert_eq!(other, &Egress::Web),
                        }
                    }
                }
            }
            // Every `Authorization` rule is one of a credential's.
            for line in conf.lines().filter(|l| l.contains("Authorization")) {
                assert!(
                    line.starts_with("request_header_access Authorization deny sandbox_")
                        || line.starts_with("acl credential_placeholder_"),
                    "{line}"
                );
                assert!(
                    line.starts_with("acl ") || line.ends_with(" credential_https"),
                    "{line}"
                );
            }
        });
        assert!(seen > 0, "a shipped spec has a credential");
    }

    #[test]
    fn wildcard_domains_are_squid_domains() {
        assert_eq!(squid_domain("*.githubusercontent.com"), ".githubusercontent.com");
        assert_eq!(squid_domain("api.github.com"), "api.github.com");
    }
}

/// The model's denied list (`appliance explain`) against what these
/// renderers write from the same model: the nftables tables and squid's
/// configuration. It lives here, not beside the list, because the model may
/// not import the renderers (docs/architecture.md, "Layers").
#[cfg(test)]
mod against_the_denied_list {
    use std::net::Ipv4Addr;

    use super::{bridge_table, inet_table, proxy_config};
    use crate::generator::model::denied::{Denial, DenialKind, denied};
    use crate::generator::model::{Appliance, Host, NEVER_DESTINATIONS, Sandbox};
    use crate::test_support::each_shipped_host;

    /// `check` of each networked sandbox of the shipped specs, with its
    /// appliance, host, address and denied list.
    fn each_sandbox(mut check: impl FnMut(&Appliance, &Host, &Sandbox, Ipv4Addr, &[Denial])) {
        each_shipped_host(|appliance, host| {
            for sandbox in &host.sandboxes {
                let list = denied(appliance.hosts.values(), host, sandbox);
                match &sandbox.network {
                    Some(network) => check(appliance, host, sandbox, network.address, &list),
                    None => assert_eq!(list.len(), 1, "{}: {list:?}", sandbox.name),
                }
            }
        });
    }

    fn targets(list: &[Denial], kind: DenialKind) -> Vec<&str> {
        list.iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.target.as_str())
            .collect()
    }

    /// Each port the host opens is either accepted from the sandbox's
    /// address by the nftables table or in its denied list, never both.
    #[test]
    fn each_open_host_port_is_accepted_or_denied() {
        each_sandbox(|_, host, sandbox, address, list| {
            let table = inet_table(host);
            let denied_ports = targets(list, DenialKind::HostPort);
            for rule in &host.firewall {
                let accepted = std::iter::once(host.network_address)
                    .chain(host.overlay_address)
                    .any(|local| {
                        table.contains(&format!(
                            "ip saddr {address} ip daddr {local} {} dport {} accept",
                            rule.protocol, rule.port
                        ))
                    });
                let target = format!("host {} {}/{}", host.name, rule.protocol, rule.port);
                assert_ne!(
                    accepted,
                    denied_ports.contains(&target.as_str()),
                    "{}: {target}, accepted: {accepted}\n{table}",
                    sandbox.name
                );
            }
        });
    }

    /// A sandbox that uses the proxy is denied exactly squid's `never_dst`
    /// ranges and its `web_ports`; every sandbox is denied the same ranges.
    #[test]
    fn ranges_and_ports_are_the_proxys() {
        each_sandbox(|_, host, sandbox, _, list| {
            let ranges = targets(list, DenialKind::Range);
            let all: Vec<&str> = NEVER_DESTINATIONS.iter().map(|(r, _)| *r).collect();
            assert_eq!(ranges, all, "{}", sandbox.name);
            if !sandbox.egress.uses_proxy() {
                assert!(targets(list, DenialKind::ProxyPort).is_empty(), "{}", sandbox.name);
                return;
            }
            let conf = proxy_config(host).unwrap();
            let never: Vec<&str> = conf
                .lines()
                .filter_map(|l| l.strip_prefix("acl never_dst dst "))
                .collect();
            assert_eq!(ranges, never, "{}", sandbox.name);
            let web_ports = conf
                .lines()
                .find_map(|l| l.strip_prefix("acl web_ports port "))
                .unwrap();
            let shown = format!("through the proxy, ports other than {}", web_ports.replace(' ', ", "));
            assert_eq!(
                targets(list, DenialKind::ProxyPort),
                [shown.as_str()],
                "{}",
                sandbox.name
            );
        });
    }

    /// Another sandbox is denied unless the bridge table accepts the pair,
    /// and then only beyond the accepted ports.
    #[test]
    fn other_sandboxes_are_denied_as_the_bridge_table_says() {
        each_sandbox(|appliance, host, sandbox, address, list| {
            let table = bridge_table(host, &appliance.network);
            let shown = targets(list, DenialKind::Sandbox);
            assert_eq!(shown.len(), host.sandboxes.len() - 1, "{}: {shown:?}", sandbox.name);
            for other in host.sandboxes.iter().filter(|o| o.name != sandbox.name) {
                let Some(network) = &other.network else { continue };
                let pair = format!("ip saddr {address} ip daddr {} ", network.address);
                let accepted: Vec<String> = table
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix(&pair))
                    // Reply rules match the service's `sport`: they open nothing.
                    .filter_map(|rest| {
                        let (protocol, rest) = rest.split_once(" dport ")?;
                        Some(format!("{protocol}/{}", rest.split_once(' ')?.0))
                    })
                    .collect();
                let mut target = format!("sandbox {} at {}", other.name, network.address);
                if !accepted.is_empty() {
                    target = format!("{target} beyond {}", accepted.join(", "));
                }
                assert!(
                    shown.contains(&target.as_str()),
                    "{}: no `{target}` in {shown:?}",
                    sandbox.name
                );
            }
        });
    }
}
