//! Reading `appliance.toml`: TOML text to the typed [`schema::Spec`].

pub mod schema;

use crate::diag::{Diagnostic, SourceFile, SpecErrors};
pub use schema::Spec;

/// The spec's bytes as text. TOML is UTF-8, so bytes that are not are a
/// spec error like any other, located at the first bad byte (its line and
/// column counted over the valid text before it).
pub fn decode(name: String, bytes: Vec<u8>) -> Result<SourceFile, SpecErrors> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(SourceFile { name, text }),
        Err(error) => {
            let offset = error.utf8_error().valid_up_to();
            let bytes = error.into_bytes();
            let bad = bytes[offset];
            // Valid up to `offset`, so nothing here is replaced.
            let valid = String::from_utf8_lossy(&bytes[..offset]).into_owned();
            let source = SourceFile { name, text: valid };
            let diagnostic = Diagnostic::new(
                offset..offset + 1,
                format!("the spec is not valid UTF-8: byte 0x{bad:02x} here does not begin a valid UTF-8 character"),
            )
            .hint("a spec is TOML text in UTF-8: save it as UTF-8 (or, if it is not a spec, pass the right one with `--spec PATH`)");
            Err(SpecErrors::new(&source, vec![diagnostic]))
        }
    }
}

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
