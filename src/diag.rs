//! Spec diagnostics: every problem points at file:line:column, says what is
//! wrong and, where we know it, how to fix it.

use std::fmt;
use std::ops::Range;

/// One problem found in a spec, located by byte span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Range<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// A spec's text and the name it is shown under in errors.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn location(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

/// Every problem found in one spec. Callers exit with code 2 on it.
#[derive(Debug)]
pub struct SpecErrors {
    pub rendered: Vec<String>,
}

impl SpecErrors {
    pub fn new(source: &SourceFile, mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by_key(|d| (d.span.start, d.message.clone()));
        diagnostics.dedup();
        let rendered = diagnostics
            .iter()
            .map(|d| {
                let (line, column) = source.location(d.span.start);
                let mut text = format!("error: {}:{line}:{column}: {}", source.name, visible(&d.message));
                if let Some(hint) = &d.hint {
                    text.push_str("\nhint: ");
                    text.push_str(&visible(hint));
                }
                text
            })
            .collect();
        Self { rendered }
    }
}

/// Format characters that act like controls: bidirectional overrides and
/// isolates, which reorder what a reader sees ("Trojan Source"), and the
/// Unicode line and paragraph separators, which YAML 1.1 and JavaScript
/// read as line breaks.
pub const INVISIBLE_CONTROLS: &[char] = &[
    '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}',
    '\u{2067}', '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}',
];

/// A message with the spec's control characters shown, not obeyed: a
/// hostile name quoted in an error must not move the cursor, colour the
/// terminal or forge a line of its own.
fn visible(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || INVISIBLE_CONTROLS.contains(&c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.rendered.len();
        for text in &self.rendered {
            writeln!(f, "{text}")?;
        }
        let plural = if count == 1 { "" } else { "s" };
        write!(f, "{count} problem{plural} in spec; nothing was written")
    }
}

impl std::error::Error for SpecErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_characters() {
        let source = SourceFile {
            name: "a.toml".into(),
            text: "a = 1\nnäme = \"x\"\n".into(),
        };
        assert_eq!(source.location(0), (1, 1));
        assert_eq!(source.location(6), (2, 1));
        // "näme = " is 7 characters but 8 bytes.
        assert_eq!(source.location(6 + 8), (2, 8));
    }
}
