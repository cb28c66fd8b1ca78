//! The one Nix value encoder behind every `.nix` file we write.
//!
//! Strings become double-quoted Nix strings with `\`, `"`, `${`, and control
//! characters escaped; non-ASCII text is UTF-8 as is (Nix strings are bytes).
//! Attribute names are quoted unless they are plain identifiers. Values that
//! are known-safe Nix expressions (`pkgs.gvisor`, paths) are marked with
//! [`expr`] and written verbatim; nothing else is.

use std::fmt::Write;

use minijinja::Value;
use minijinja::value::ValueKind;

/// Nix keywords, which cannot be bare attribute names.
const KEYWORDS: &[&str] = &[
    "assert", "else", "if", "in", "inherit", "let", "or", "rec", "then", "with",
];

/// A Nix string literal that evaluates to exactly `text`.
pub fn string(text: &str) -> String {
    format!("\"{}\"", string_content(text))
}

/// The inside of a Nix string literal for `text`, to splice next to an
/// interpolation such as `"${./file}:/target"`.
pub fn string_content(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // `${` would start an interpolation; `\$` keeps the dollar.
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out
}

/// Why `text` cannot stand in a `#` comment, or `None`: a line break (or
/// any control character) would end the comment.
pub fn comment_problem(text: &str) -> Option<String> {
    text.chars().find(|c| c.is_control()).map(|c| {
        format!(
            "{text:?} cannot be written into a Nix comment: it contains the control character U+{:04X}",
            u32::from(c)
        )
    })
}

/// An attribute name, quoted unless it is a plain Nix identifier.
pub fn attr_name(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '\'')
        && !KEYWORDS.contains(&name);
    if plain { name.to_string() } else { string(name) }
}

/// A value to encode (minijinja's `Value`) from any serializable data.
pub fn value<T: serde::Serialize>(data: T) -> Value {
    Value::from(minijinja::value::Serde(data))
}

/// A relative path literal such as `./hosts/hub` or `../../agents/x/y.json`.
/// Nix path literals have no escapes, so only what a path literal can
/// spell is accepted; names in them are `a-z0-9-` (`model::names`), checked
/// long before rendering, so anything else here is a bug, not bad input.
pub fn path(relative: &str) -> String {
    let literal = (relative.starts_with("./") || relative.starts_with("../"))
        && !relative.ends_with('/')
        && !relative.contains("//")
        && relative
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+/".contains(c));
    assert!(literal, "bug: `{relative}` cannot be written as a Nix path literal");
    relative.to_string()
}

/// Marks a known-safe Nix expression so the encoder writes it verbatim.
pub fn expr(code: impl Into<String>) -> Value {
    Value::from_safe_string(code.into())
}

/// Encodes a value as Nix, indenting nested lines by `indent`.
pub fn encode(value: &Value, indent: usize) -> Result<String, String> {
    let mut out = String::new();
    write_value(&mut out, value, indent, false)?;
    Ok(out)
}

fn is_compound(value: &Value) -> bool {
    matches!(value.kind(), ValueKind::Seq | ValueKind::Map) && value.len().unwrap_or(0) > 0
}

fn write_value(out: &mut String, value: &Value, indent: usize, in_list: bool) -> Result<(), String> {
    if value.is_safe() {
        let code = value.as_str().unwrap_or_default();
        // A function application inside a list needs parentheses.
        if in_list && code.contains(' ') && !is_single_term(code) {
            write!(out, "({code})").expect("writing to a String");
        } else {
            out.push_str(code);
        }
        return Ok(());
    }
    match value.kind() {
        ValueKind::Undefined => return Err("undefined value in generated Nix".into()),
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(int) = value.as_i64() {
                write!(out, "{int}").expect("writing to a String");
            } else {
                let float: f64 = f64::try_from(value.clone()).map_err(|e| e.to_string())?;
                if !float.is_finite() {
                    return Err(format!("{float} has no Nix literal"));
                }
                write!(out, "{float:?}").expect("writing to a String");
            }
        }
        ValueKind::String => out.push_str(&string(value.as_str().unwrap_or_default())),
        ValueKind::Seq => {
            let items: Vec<Value> = value.try_iter().map_err(|e| e.to_string())?.collect();
            if items.is_empty() {
                out.push_str("[ ]");
            } else if items.iter().all(|i| !is_compound(i)) && items.len() <= 4 {
                let mut line = String::from("[");
                for item in &items {
                    line.push(' ');
                    write_value(&mut line, item, indent, true)?;
                }
                line.push_str(" ]");
                if line.len() <= 80 && !line.contains('\n') {
                    out.push_str(&line);
                    return Ok(());
                }
                write_list(out, &items, indent)?;
            } else {
                write_list(out, &items, indent)?;
            }
        }
        ValueKind::Map => {
            let keys: Vec<Value> = value.try_iter().map_err(|e| e.to_string())?.collect();
            if keys.is_empty() {
                out.push_str("{ }");
                return Ok(());
            }
            out.push_str("{\n");
            for key in keys {
                let item = value.get_item(&key).map_err(|e| e.to_string())?;
                let name = key.as_str().map(str::to_string).unwrap_or_else(|| key.to_string());
                write!(out, "{}{} = ", pad(indent + 2), attr_name(&name)).expect("writing to a String");
                write_value(out, &item, indent + 2, false)?;
                out.push_str(";\n");
            }
            write!(out, "{}}}", pad(indent)).expect("writing to a String");
        }
        other => return Err(format!("a {other:?} value cannot be written as Nix")),
    }
    Ok(())
}

/// Whether `code` is one term that a list can hold without parentheses:
/// already parenthesized, or one string literal.
fn is_single_term(code: &str) -> bool {
    if code.starts_with('(') && code.ends_with(')') {
        return true;
    }
    let Some(inner) = code.strip_prefix('"').and_then(|c| c.strip_suffix('"')) else {
        return false;
    };
    // No unescaped quote inside means the literal spans the whole code.
    let mut escaped = false;
    for c in inner.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '"') => return false,
            _ => {}
        }
    }
    !escaped
}

fn write_list(out: &mut String, items: &[Value], indent: usize) -> Result<(), String> {
    out.push_str("[\n");
    for item in items {
        out.push_str(&pad(indent + 2));
        write_value(out, item, indent + 2, true)?;
        out.push('\n');
    }
    write!(out, "{}]", pad(indent)).expect("writing to a String");
    Ok(())
}

fn pad(width: usize) -> String {
    " ".repeat(width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_what_nix_interprets() {
        assert_eq!(string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(string("${x} $y $"), r#""\${x} $y $""#);
        assert_eq!(string("l1\nl2\t"), r#""l1\nl2\t""#);
        assert_eq!(string("''x''"), r#""''x''""#);
        assert_eq!(string("größe ✓"), "\"größe ✓\"");
    }

    #[test]
    fn path_literals_accept_only_what_nix_can_spell() {
        assert_eq!(path("./hosts/hub"), "./hosts/hub");
        assert_eq!(path("../../agents/a-1/config.json"), "../../agents/a-1/config.json");
        for bad in ["./a b", "./a\n", "hosts/hub", "./a/", "./${x}", "./a\"b"] {
            assert!(std::panic::catch_unwind(|| path(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attribute_names_are_quoted_when_needed() {
        assert_eq!(attr_name("runsc"), "runsc");
        assert_eq!(attr_name("runsc-dind"), "runsc-dind");
        assert_eq!(attr_name("a.b"), r#""a.b""#);
        assert_eq!(attr_name("in"), r#""in""#);
        assert_eq!(attr_name("1x"), r#""1x""#);
        assert_eq!(attr_name(""), r#""""#);
    }

    #[test]
    fn values_encode_with_indentation() {
        let value = value(serde_json::json!({"a": [1, "x"], "b": {"c": true}, "d": null}));
        assert_eq!(
            encode(&value, 0).unwrap(),
            "{\n  a = [ 1 \"x\" ];\n  b = {\n    c = true;\n  };\n  d = null;\n}"
        );
        let list = Value::from(vec![expr("lib.getExe' pkgs.gvisor \"runsc\""), Value::from("y")]);
        assert_eq!(
            encode(&list, 0).unwrap(),
            "[ (lib.getExe' pkgs.gvisor \"runsc\") \"y\" ]"
        );
    }
}
