//! Names that end up as Matrix localparts, container names, systemd units,
//! Nix attributes and file names must be safe in all of them at once.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_names() {
        assert_eq!(name_problem("melchior"), None);
        assert_eq!(name_problem("agent-2"), None);
        assert!(name_problem("Melchior").is_some());
        assert!(name_problem("a_b").is_some());
        assert!(name_problem("x-").is_some());
        assert!(name_problem("a--b").is_some());
        assert!(name_problem("9lives").is_some());
        assert!(name_problem(&"a".repeat(33)).is_some());
    }

    #[test]
    fn suggestions_are_safe() {
        for raw in ["Melchior", "a_b", "9 lives!", "--", "ÄÖÜ"] {
            let suggestion = suggest(raw);
            assert_eq!(name_problem(&suggestion), None, "{raw} -> {suggestion}");
        }
    }

    #[test]
    fn server_names() {
        assert_eq!(server_name_problem("magi"), None);
        assert_eq!(server_name_problem("matrix.example.org"), None);
        assert!(server_name_problem("Magi").is_some());
        assert!(server_name_problem("a..b").is_some());
    }
}
