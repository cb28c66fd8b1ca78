//! Egress grants (docs/warden.md, "Egress grants"): an admin's `!allow
//! <agent> <host> [duration]` lets one domain-list sandbox of the Matrix
//! host reach one more host name through the egress proxy, until it
//! expires. The rules both sides share live here: the spec's durations
//! (`[matrix] grant-default`, `grant-max`), which names may be granted at
//! all, and where the proxy reads each sandbox's grants.
//!
//! What a grant can never do is decided elsewhere and first: squid refuses
//! `never_dst` (private, loopback, link-local, metadata addresses, after
//! resolving the name) before its grant rule, and the host firewall refuses
//! those ranges to the proxy itself. The name check here only refuses early,
//! with a reason in the room, what could never work or names the host's own
//! or the cloud's services.

use std::net::IpAddr;

/// The directory of the grant files (one per grantable sandbox, named as
/// it): outside the warden's 0700 directory, since squid reads them as its
/// own user when it reconfigures. Names and host names only, no secret.
pub const GRANTS_DIR: &str = "/var/lib/appliance/egress-grants";

/// `grant-default` when the spec sets none.
pub const DEFAULT_GRANT_SECS: u64 = 3600;
/// `grant-max` when the spec sets none: a day.
pub const DEFAULT_GRANT_MAX_SECS: u64 = 86_400;
/// The longest `grant-max` the spec may set: a grant is a temporary
/// exception; anything for longer belongs in the agent's `egress` list.
pub const GRANT_MAX_LIMIT_SECS: u64 = 30 * 86_400;

/// The grant file of sandbox `name`.
pub fn grants_file(name: &str) -> String {
    format!("{GRANTS_DIR}/{name}")
}

/// `30m`, `2h`, `1d` (and `45s`): a whole number, then one unit. Seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a duration; write a whole number and a unit: `45s`, `30m`, `2h`, `1d`");
    let unit_at = text.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = text.split_at(unit_at);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    // Digits only: no sign, no space, no `1_000`; six at most keeps the
    // product far from overflowing.
    if number.is_empty() || number.len() > 6 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let value: u64 = number.parse().map_err(|_| bad())?;
    if value == 0 {
        return Err(format!("`{text}` is no time at all; a grant lasts at least `1s`"));
    }
    Ok(value * scale)
}

/// A duration as people read it: `1d 2h`, `30m`, `45s`.
pub fn describe_duration(secs: u64) -> String {
    let parts = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut left = secs;
    let mut out = Vec::new();
    for (size, unit) in parts {
        if left >= size {
            out.push(format!("{}{unit}", left / size));
            left %= size;
        }
        if out.len() == 2 {
            break;
        }
    }
    if out.is_empty() {
        "0s".to_string()
    } else {
        out.join(" ")
    }
}

/// The host name a grant is for: lowercased, without a trailing dot, and
/// without `:80`/`:443` (the denial notices show the port; the proxy only
/// reaches those two anyway). Refused, with the reason, by the rules of an
/// `egress` entry ([`crate::common::hostnames::domain_problem`]: an address in any
/// notation, a metadata server's name, a special-use or local name, a
/// public suffix) and more: a wildcard, a single label, `metadata`.
pub fn check_host(text: &str) -> Result<String, String> {
    let shown = text.escape_debug().to_string();
    let mut host = text.to_ascii_lowercase();
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        return Err(format!(
            "`{shown}` is an IP address; a grant names a host name, which the proxy resolves and checks against the private and metadata ranges"
        ));
    }
    if let Some((name, port)) = host.rsplit_once(':') {
        if port != "80" && port != "443" {
            return Err(format!(
                "`{shown}`: the egress proxy reaches ports 80 and 443 only; give the host name alone"
            ));
        }
        host = name.to_string();
    }
    if let Some(name) = host.strip_suffix('.') {
        host = name.to_string();
    }
    if host.starts_with("*.") || host.starts_with('.') {
        return Err(format!(
            "`{shown}` is a wildcard; a grant names one host (a domain and its subdomains belong in the agent's `egress` list)"
        ));
    }
    if host == "metadata" {
        return Err(format!(
            "`{shown}` is the cloud metadata server's short name; it is never granted"
        ));
    }
    if host == "localhost" {
        return Err(format!("`{shown}` names this host itself; it is never granted"));
    }
    match crate::common::hostnames::domain_problem(&host) {
        // A single label that is not an address: `egress` calls it a
        // public suffix; here it is more likely a local name.
        Some((problem, _)) if !host.contains('.') && problem.starts_with("is a public suffix") => Err(format!(
            "`{shown}` is a single label, which a resolver completes with a local search domain; give the full name"
        )),
        Some((problem, _)) => Err(format!("`{shown}` {problem}; it is never granted")),
        None => Ok(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_whole_units() {
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        for bad in [
            "", "h", "1", "1w", "-1h", "+1h", "1.5h", " 1h", "1 h", "1H", "0m", "9999999d", "1h30m", "١h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("0s").unwrap_err().contains("at least"));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(describe_duration(3600), "1h");
        assert_eq!(describe_duration(5400), "1h 30m");
        assert_eq!(describe_duration(90_061), "1d 1h");
        assert_eq!(describe_duration(59), "59s");
        assert_eq!(describe_duration(0), "0s");
    }

    #[test]
    fn public_host_names_are_granted_in_one_spelling() {
        assert_eq!(check_host("pypi.org"), Ok("pypi.org".into()));
        assert_eq!(
            check_host("Files.PythonHosted.org."),
            Ok("files.pythonhosted.org".into())
        );
        assert_eq!(check_host("web.example.org:443"), Ok("web.example.org".into()));
        assert_eq!(check_host("xn--bcher-kva.example"), Ok("xn--bcher-kva.example".into()));
    }

    #[test]
    fn addresses_local_names_and_non_names_are_refused_with_a_reason() {
        let cases = [
            ("169.254.169.254", "IP address"),
            ("10.0.0.1:443", "address"),
            ("::1", "IP address"),
            ("[fd00:ec2::254]", "IP address"),
            ("2130706433.example", ""),
            ("0x7f.1", "address"),
            ("127.1", "address"),
            ("0177.0.0.1", "address"),
            ("2130706433", "address"),
            ("localhost", "this host"),
            ("LOCALHOST.", "this host"),
            ("db.localhost", "special-use or local"),
            ("metadata", "metadata"),
            ("metadata.google.internal", "metadata server"),
            ("METADATA.GOOG", "metadata server"),
            ("instance-data.ec2.internal", "metadata server"),
            ("anything.internal", "special-use or local"),
            ("printer.local", "special-use or local"),
            ("1.0.0.127.in-addr.arpa", "special-use or local"),
            ("web.rehearsal.test", "special-use or local"),
            ("co.uk", "public suffix"),
            ("intranet", "single label"),
            ("*.example.org", "wildcard"),
            (".example.org", "wildcard"),
            ("example.org:22", "ports 80 and 443"),
            ("exa mple.org", "not a valid host name"),
            ("under_score.example.org", "not a valid host name"),
            ("-lead.example.org", "not a valid host name"),
            ("a..b", "not a valid host name"),
            ("", "not a valid host name"),
            ("example.org/path", "port or path"),
            ("example.org\n", "not a valid host name"),
            ("ex\u{202e}ample.org", "not a valid host name"),
        ];
        for (host, why) in cases {
            match check_host(host) {
                Ok(granted) if why.is_empty() => assert_eq!(granted, host),
                Ok(granted) => panic!("{host:?} was granted as {granted:?}"),
                Err(reason) => assert!(reason.contains(why), "{host:?}: {reason}"),
            }
        }
        let long = format!("{}.org", "a".repeat(64));
        assert!(check_host(&long).is_err());
        // No control character reaches the room as itself.
        assert!(check_host("a\u{1b}[2J.org").unwrap_err().contains("\\u{1b}"));
    }
}
