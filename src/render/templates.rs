//! minijinja set up for Nix: strict undefined values, and every `{{ }}`
//! encoded by the Nix encoder unless it is a known-safe expression.

use anyhow::{Context, Result, anyhow};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

use super::nix;

/// Templates, embedded so the binary needs no files at runtime.
const TEMPLATES: &[(&str, &str)] = &[
    ("host.nix.j2", include_str!("../../templates/host.nix.j2")),
    ("image.nix.j2", include_str!("../../templates/image.nix.j2")),
    ("index.nix.j2", include_str!("../../templates/index.nix.j2")),
    (
        "pairing-client.nix.j2",
        include_str!("../../templates/pairing-client.nix.j2"),
    ),
    (
        "pairing-server.nix.j2",
        include_str!("../../templates/pairing-server.nix.j2"),
    ),
    ("admins.nix.j2", include_str!("../../templates/admins.nix.j2")),
];

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
