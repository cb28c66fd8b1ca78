//! Names that end up as Matrix localparts, container names, systemd units,
//! Nix attributes and file names must be safe in all of them at once.

use crate::common::term::INVISIBLE_CONTROLS;

/// The longest name we accept: container names, unit names and Matrix
/// localparts all take more, but `<name>-exec` must still fit everywhere.
pub const MAX_NAME: usize = 32;

/// Why `name` is not a safe name, or `None` when it is.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME {
        return Some(format!("is longer than {MAX_NAME} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some("must start with a lowercase letter".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!("contains `{bad}`; only a-z, 0-9 and `-` are allowed"));
    }
    if name.ends_with('-') || name.contains("--") {
        return Some("must not end with `-` or contain `--`".into());
    }
    None
}

/// A safe name derived from `name`, offered in hints.
pub fn suggest(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "a-");
    }
    out.truncate(MAX_NAME);
    out.trim_end_matches('-').to_string()
}

/// Why a Matrix server name is unusable, or `None`.
pub fn server_name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    (!valid).then(|| "must be a lowercase DNS name such as `magi` or `matrix.example.org`".into())
}

/// Why an Ollama model reference is unusable, or `None`.
pub fn model_problem(model: &str) -> Option<String> {
    let valid = !model.is_empty()
        && model.len() <= 200
        && model
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._:/-".contains(c) || c.is_ascii_uppercase());
    (!valid).then(|| "must be an Ollama model reference such as `qwen3.5:27b-q4_K_M`".into())
}

/// Why free text for people (a room's name or topic, a lint's reason) is
/// unusable, or `None`. Any printable text is fine, quotes and `$` included:
/// it lands in JSON and in escaped Nix strings only. Control characters are
/// not: a newline or an ANSI escape would forge lines and colours in
/// `appliance check` and `explain` output and in Matrix clients.
pub fn text_problem(text: &str) -> Option<String> {
    text.chars()
        .find(|c| c.is_control() || INVISIBLE_CONTROLS.contains(c))
        .map(|c| format!("contains the control character U+{:04X}", u32::from(c)))
}

/// Longest GPU model token: NVIDIA's names are short (`h100`, `rtx-6000-ada`).
const MAX_GPU_MODEL: usize = 32;

/// Why a GPU `model` is unusable, or `None`: a model the GPU catalog knows,
/// or one plain token of letters, digits, `-`, `_` and `.` (it lands in
/// the generated notes and messages, never as code).
pub fn gpu_model_problem(model: &str) -> Option<String> {
    if super::vram::gpu_model(model).is_some() {
        return None;
    }
    let plain = model.starts_with(|c: char| c.is_ascii_alphanumeric())
        && model.len() <= MAX_GPU_MODEL
        && model.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (!plain).then(|| {
        format!("is not a GPU model: write one word of letters, digits, `-`, `_` or `.` (at most {MAX_GPU_MODEL})")
    })
}

/// Why a WireGuard `endpoint` is unusable, or `None`: a host, optionally
/// with `:port` (51820 when absent), where the host is a DNS name, an IPv4
/// address or an IPv6 address (in brackets when a port follows), and the
/// port is 1 to 65535. nixpkgs splices it into a root shell script and
/// `wg set ... endpoint`, so nothing else may pass.
pub fn endpoint_problem(endpoint: &str) -> Option<String> {
    if let Some(rest) = endpoint.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Some("opens `[` without closing it".into());
        };
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Some(format!("has `[{inner}]`, which is not an IPv6 address"));
        }
        return match after {
            "" => None,
            _ => after.strip_prefix(':').map_or_else(
                || Some(format!("has `{after}` after the address; write `[address]:port`")),
                port_problem,
            ),
        };
    }
    if endpoint.matches(':').count() >= 2 {
        return match endpoint.parse::<std::net::Ipv6Addr>() {
            Ok(_) => None,
            Err(_) => Some("is not an IPv6 address; with a port, write `[address]:port`".into()),
        };
    }
    let (host, port) = endpoint.split_once(':').map_or((endpoint, None), |(h, p)| (h, Some(p)));
    if let Some(problem) = port.and_then(port_problem) {
        return Some(problem);
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return None;
    }
    // A name whose last label is a number would be read as an address.
    let numeric_tail = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()));
    if !crate::common::hostnames::is_dns_name(host) || numeric_tail {
        return Some(format!(
            "has host `{host}`, which is neither a DNS name nor an IP address"
        ));
    }
    None
}

fn port_problem(port: &str) -> Option<String> {
    let valid = port.parse::<u16>().is_ok_and(|p| p != 0) && !port.starts_with(['0', '+']);
    (!valid).then(|| format!("has port `{port}`; a port is a number from 1 to 65535"))
}

/// The key types OpenSSH accepts in `authorized_keys`.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Why an SSH public key line is unusable, or `None`: `type base64
/// [comment]` with a known type, a base64 key and a comment without
/// control characters. Options (`command="..."`) are not accepted: they
/// are a policy the spec does not express.
pub fn ssh_key_problem(line: &str) -> Option<String> {
    let mut parts = line.splitn(3, ' ');
    let kind = parts.next().unwrap_or_default();
    let key = parts.next().unwrap_or_default();
    let comment = parts.next().unwrap_or_default();
    if !SSH_KEY_TYPES.contains(&kind) {
        return Some(format!("does not start with a key type ({})", SSH_KEY_TYPES.join(", ")));
    }
    let base64 = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    if !base64 {
        return Some("has no base64 key after its type".into());
    }
    text_problem(comment).map(|problem| format!("has a comment that {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `problem` passes every `good` input and names a problem in every
    /// `bad` one.
    fn check(problem: fn(&str) -> Option<String>, good: &[&str], bad: &[&str]) {
        for input in good {
            assert_eq!(problem(input), None, "{input:?}");
        }
        for input in bad {
            assert!(problem(input).is_some(), "{input:?}");
        }
    }

    #[test]
    fn safe_names() {
        check(
            name_problem,
            &["melchior", "agent-2"],
            &["Melchior", "a_b", "x-", "a--b", "9lives", &"a".repeat(33)],
        );
    }

    #[test]
    fn suggestions_are_safe() {
        for raw in ["Melchior", "a_b", "9 lives!", "--", "ÄÖÜ"] {
            let suggestion = suggest(raw);
            assert_eq!(name_problem(&suggestion), None, "{raw} -> {suggestion}");
        }
    }

    #[test]
    fn free_text_refuses_control_characters_only() {
        check(
            text_problem,
            &["Ops room: \"quotes\", $(x) ${y} '' \\ ; # } ✓"],
            &[
                "two\nlines",
                "\u{1b}[31mred",
                "del\u{7f}",
                "abc\u{202e}fed",
                "line\u{2028}break",
            ],
        );
    }

    #[test]
    fn gpu_models_are_known_or_one_token() {
        check(
            gpu_model_problem,
            &["L4", "rtx-6000_ada.2"],
            &["l4\n}; evil", "rtx 4090", "", "-x", "a\"b", "${x}"],
        );
    }

    #[test]
    fn endpoints_are_host_and_port() {
        check(
            endpoint_problem,
            &[
                "hub.example.org:51820",
                "203.0.113.7:51820",
                "[2001:db8::1]:51820",
                "hub:1",
            ],
            &[
                "hub:0",
                "[2001:db8::1]x",
                "[2001:db8::1",
                "hub:65536",
                "hub:+1",
                "hub:051820",
                "[nope]:51820",
                "2001:db8::1:51820",
                "a b:1",
                "x\";rm -rf /;\":1",
                "$(id):51820",
                "127.1:51820",
            ],
        );
    }

    #[test]
    fn ssh_keys_are_one_line_of_type_key_comment() {
        check(
            ssh_key_problem,
            &["ssh-ed25519 AAAAC3Nza+/= ana@laptop \"x\" $y", "ssh-ed25519 AAAAC3Nza"],
            &[
                "ssh-ed25519",
                "ssh-ed25519 AAA\nssh-rsa BBB",
                "command=\"sh\" ssh-ed25519 AAAA",
                "ssh-ed25519 AAAA x\u{1b}[2J",
                "ecdsa-sha2-evil AAAA",
            ],
        );
    }

    #[test]
    fn server_names() {
        check(server_name_problem, &["magi", "matrix.example.org"], &["Magi", "a..b"]);
    }
}
