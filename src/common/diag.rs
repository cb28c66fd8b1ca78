//! Spec diagnostics: every problem points at file:line:column, says what is
//! wrong and, where we know it, how to fix it.

use std::fmt;
use std::ops::Range;

use crate::common::term::inert;

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
                // Messages and hints quote the spec: each stays on its line.
                let mut text = format!("error: {}:{line}:{column}: {}", inert(&source.name), inert(&d.message));
                if let Some(hint) = &d.hint {
                    text.push_str("\nhint: ");
                    text.push_str(&inert(hint));
                }
                text
            })
            .collect();
        Self { rendered }
    }
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
