//! Which host names the egress proxy may be told to allow: the rules of
//! an `egress` entry in the spec (the model) and of an admin's egress grant
//! (the warden, on the host), so both refuse the same names with the same
//! words. Below the model and the warden, which both use it.

/// Cloud metadata servers' names. The proxy refuses their addresses
/// anyway (link-local, `model::NEVER_DESTINATIONS`); naming one in a policy is
/// still a mistake worth stopping, and `*.goog` would cover `metadata.goog`.
const METADATA_NAMES: &[&str] = &[
    "metadata.goog",
    "metadata.google.internal",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
    "metadata.tencentyun.com",
    "metadata.platformequinix.com",
];

/// Special-use and private-use names that never resolve to a public host
/// (RFC 6761, 6762, 7686, 8375, 9476, ICANN's `.internal`, and the
/// de-facto private `lan`, `home`, `corp`, `localdomain`).
const SPECIAL_SUFFIXES: &[&str] = &[
    "localhost",
    "local",
    "internal",
    "home.arpa",
    "arpa",
    "test",
    "invalid",
    "onion",
    "alt",
    "lan",
    "home",
    "corp",
    "localdomain",
];

/// Common public suffixes of more than one label, from the Public Suffix
/// List (publicsuffix.org): a small embedded subset, not the whole list,
/// so `*.co.uk` or `*.github.io` (every user's site) is refused without a
/// network lookup. A single label (`com`, `*.com`) is always a suffix.
const PUBLIC_SUFFIXES: &[&str] = &[
    // Country second levels.
    "ac.uk",
    "co.uk",
    "gov.uk",
    "ltd.uk",
    "me.uk",
    "net.uk",
    "org.uk",
    "plc.uk",
    "sch.uk",
    "com.au",
    "edu.au",
    "gov.au",
    "net.au",
    "org.au",
    "co.nz",
    "net.nz",
    "org.nz",
    "ac.jp",
    "co.jp",
    "ne.jp",
    "or.jp",
    "com.br",
    "net.br",
    "org.br",
    "com.cn",
    "net.cn",
    "org.cn",
    "co.in",
    "net.in",
    "org.in",
    "co.za",
    "org.za",
    "co.kr",
    "or.kr",
    "com.ar",
    "com.hk",
    "com.mx",
    "com.sg",
    "com.tr",
    "com.tw",
    "co.il",
    // Hosting platforms whose subdomains belong to different people.
    "appspot.com",
    "blogspot.com",
    "github.io",
    "gitlab.io",
    "herokuapp.com",
    "netlify.app",
    "pages.dev",
    "vercel.app",
    "workers.dev",
];

/// Why an egress entry is not a public host name, and how to fix it.
pub fn domain_problem(text: &str) -> Option<(&'static str, &'static str)> {
    const NAME_HINT: &str =
        "write a host name such as `api.github.com`, or `*.github.com` for a domain and its subdomains";
    let wildcard = text.starts_with("*.");
    let name = text.strip_prefix("*.").unwrap_or(text);
    let lower = name.to_ascii_lowercase();
    if is_address(&lower) {
        return Some((
            "is an address; the proxy allows names only",
            "name the host instead (the proxy never connects to private, loopback or link-local addresses)",
        ));
    }
    if name.contains(':') || name.contains('/') {
        return Some(("has a port or path; write the host name only", NAME_HINT));
    }
    if !is_dns_name(name) {
        return Some(("is not a valid host name", NAME_HINT));
    }
    let within = |suffix: &str| lower == suffix || lower.ends_with(&format!(".{suffix}"));
    if METADATA_NAMES
        .iter()
        .any(|m| within(m) || (wildcard && m.ends_with(&format!(".{lower}"))))
    {
        return Some((
            "names a cloud metadata server",
            "remove it: the metadata server hands out the VM's credentials",
        ));
    }
    if SPECIAL_SUFFIXES.iter().any(|s| within(s)) {
        return Some((
            "is a special-use or local name, not a public host",
            "name a public host; local services are not reachable through the egress proxy",
        ));
    }
    if !lower.contains('.') || PUBLIC_SUFFIXES.contains(&lower.as_str()) {
        return Some((
            "is a public suffix, under which names belong to many unrelated owners",
            "name the owner's domain below it, such as `*.example.co.uk` or `api.github.com`",
        ));
    }
    None
}

/// Whether `name` is a DNS host name: at most 253 characters of dot-separated
/// labels, each 1 to 63 letters, digits and inner hyphens (RFC 1123).
pub fn is_dns_name(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

/// Whether `name` is an address in any notation a resolver or URL parser
/// takes for one: IPv6 (bare or in brackets), and IPv4 in every `inet_aton`
/// form (`127.1`, `0x7f.0.0.1`, `0177.0.0.1`, `2130706433`). Like the
/// WHATWG URL parser, a name whose last label is a number is an address:
/// no public top-level domain is numeric.
fn is_address(name: &str) -> bool {
    if name.starts_with('[') || name.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    let last = name.trim_end_matches('.').rsplit('.').next().unwrap_or_default();
    let hex = last
        .strip_prefix("0x")
        .is_some_and(|digits| digits.chars().all(|c| c.is_ascii_hexdigit()));
    hex || (!last.is_empty() && last.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_public_names() {
        assert_eq!(domain_problem("api.github.com"), None);
        assert_eq!(domain_problem("*.githubusercontent.com"), None);
        assert!(domain_problem("169.254.169.254").is_some());
        assert!(domain_problem("github.com:443").is_some());
        assert!(domain_problem("metadata.google.internal").is_some());
        assert!(domain_problem("localhost").is_some());
        assert!(domain_problem("bad_name.com").is_some());
        for address in [
            "127.1",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "2130706433",
            "[::1]",
            "::1",
            "1.2.3.0x10",
        ] {
            assert_eq!(
                domain_problem(address).map(|p| p.0),
                Some("is an address; the proxy allows names only"),
                "{address}"
            );
        }
        for special in [
            "metadata.goog",
            "*.goog",
            "*.google.internal",
            "nas.home.arpa",
            "*.co.uk",
            "*.com",
        ] {
            assert!(domain_problem(special).is_some(), "{special}");
        }
        assert_eq!(domain_problem("*.example.co.uk"), None);
        assert_eq!(domain_problem("1password.com"), None);
    }
}
