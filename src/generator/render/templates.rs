//! minijinja set up for Nix: strict undefined values, and every `{{ }}`
//! encoded by the Nix encoder unless it is a known-safe expression.

use anyhow::{Context, Result, anyhow};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

use super::nix;

/// Templates, embedded so the binary needs no files at runtime.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "image.nix.j2",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/image.nix.j2")),
    ),
    (
        "index.nix.j2",
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/index.nix.j2")),
    ),
];

/// A value as text: strings as they are, anything else as minijinja shows it.
fn plain_text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_string)
}

pub struct Engine {
    env: Environment<'static>,
}

impl Engine {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(true)
                .build()
                .expect("default delimiters are valid"),
        );
        env.set_formatter(|out, _state, value| {
            let text = nix::encode(value, 0).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))?;
            out.write_str(&text).map_err(Error::from)
        });
        // `{{ value | nix(4) }}`: a multi-line value indented to fit its place.
        env.add_filter("nix", |value: Value, indent: Option<usize>| -> Result<Value, Error> {
            let text =
                nix::encode(&value, indent.unwrap_or(0)).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))?;
            Ok(Value::from_safe_string(text))
        });
        // `"... {{ value | str }} ..."`: text inside a Nix string literal the
        // template opened, escaped like the encoder's strings.
        env.add_filter("str", |value: Value| {
            Value::from_safe_string(nix::string_content(&plain_text(&value)))
        });
        // `# ... {{ value | comment }}`: text inside a `#` comment, which a
        // newline would end (and what follows would be live Nix). Spec
        // values are checked long before this; a control character here is
        // a bug, and generation fails rather than write it.
        env.add_filter("comment", |value: Value| -> Result<Value, Error> {
            let text = plain_text(&value);
            match nix::comment_problem(&text) {
                None => Ok(Value::from_safe_string(text)),
                Some(problem) => Err(Error::new(ErrorKind::InvalidOperation, problem)),
            }
        });
        // `{{ name | attr }}`: an attribute name, quoted when needed.
        env.add_filter("attr", |name: String| Value::from_safe_string(nix::attr_name(&name)));
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("embedded templates parse");
        }
        Self { env }
    }

    pub fn render<S: serde::Serialize>(&self, template: &str, context: S) -> Result<String> {
        let template = self.env.get_template(template).map_err(|e| anyhow!(e))?;
        let text = template
            .render(nix::value(context))
            .map_err(|e| anyhow!("{e:#}"))
            .with_context(|| format!("failed to render template `{}`", template.name()))?;
        Ok(text)
    }
}
