//! Reading `appliance.toml`: TOML text to the typed [`schema::Spec`].

pub mod schema;

use crate::diag::{Diagnostic, SourceFile, SpecErrors};
pub use schema::Spec;

/// Parses a spec, turning TOML and schema errors into located diagnostics.
pub fn parse(source: &SourceFile) -> Result<Spec, SpecErrors> {
    toml::from_str(&source.text).map_err(|error| {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim().replace('\n', " ");
        let mut diagnostic = Diagnostic::new(span, message.clone());
        if message.starts_with("unknown field") {
            diagnostic = diagnostic.hint("remove the key or fix its spelling; every key is listed in docs/spec.md");
        } else if message.starts_with("missing field") {
            diagnostic = diagnostic.hint("add the key; docs/spec.md says what it means");
        } else if message.contains("unknown variant") {
            diagnostic = diagnostic.hint("use one of the values listed above");
        } else {
            diagnostic = diagnostic.hint("see docs/spec.md for the spec format");
        }
        SpecErrors::new(source, vec![diagnostic])
    })
}
