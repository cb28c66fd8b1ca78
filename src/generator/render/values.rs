//! A generated NixOS module that is only option values: each
//! `appliance.<option> = <value>;` the spec decided, for the hand-written
//! modules of modules/ to map onto nixpkgs (docs/options.md). No logic is
//! written here; what a value means is said once, in its module.

use anyhow::{Result, bail};
use minijinja::Value;

use super::nix;

/// One option of a generated module: its path, its value and the comment
/// lines above it (the reasons behind a value, where the value alone does
/// not show them).
pub struct Setting {
    pub path: &'static str,
    pub value: Value,
    pub comment: Vec<String>,
}

impl Setting {
    pub fn new(path: &'static str, value: impl serde::Serialize) -> Setting {
        Setting {
            path,
            value: nix::value(value),
            comment: Vec::new(),
        }
    }

    pub fn with_comment(mut self, lines: Vec<String>) -> Setting {
        self.comment = lines;
        self
    }
}

/// The text of a module of `settings`, inert unless `config.appliance.host`
/// is `host`; `header` is its leading comment lines.
pub fn module(header: &[String], host: &str, settings: &[Setting]) -> Result<String> {
    let mut text = String::new();
    for line in header {
        text.push_str(&comment_line("", line)?);
    }
    text.push_str("{ config, lib, pkgs, ... }:\n{\n");
    text.push_str(&format!(
        "  config = lib.mkIf (config.appliance.enable && config.appliance.host == {}) {{\n",
        nix::string(host)
    ));
    // A blank line between options, as a person would write them.
    for (i, setting) in settings.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        for line in &setting.comment {
            text.push_str(&comment_line("    ", line)?);
        }
        text.push_str(&format!("    {} = {};\n", setting.path, encode(&setting.value, 4)?));
    }
    text.push_str("  };\n}\n");
    Ok(text)
}

/// `# line`, indented; a control character (which would end the comment
/// and make the rest live Nix) is a bug here: spec values are checked long
/// before, and generation fails rather than write it.
fn comment_line(indent: &str, line: &str) -> Result<String> {
    if let Some(problem) = nix::comment_problem(line) {
        bail!(problem);
    }
    Ok(if line.is_empty() {
        format!("{indent}#\n")
    } else {
        format!("{indent}# {line}\n")
    })
}

fn encode(value: &Value, indent: usize) -> Result<String> {
    nix::encode(value, indent).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_values_module_is_each_setting_with_its_comment_inside_the_hosts_condition() {
        let settings = [
            Setting::new("appliance.a", ["x"]),
            Setting::new("appliance.b", true).with_comment(vec!["why b".into()]),
        ];
        let text = module(&["head".into()], "h\"", &settings).unwrap();
        assert_eq!(
            text,
            "# head\n{ config, lib, pkgs, ... }:\n{\n  \
             config = lib.mkIf (config.appliance.enable && config.appliance.host == \"h\\\"\") {\n    \
             appliance.a = [ \"x\" ];\n\n    # why b\n    appliance.b = true;\n  };\n}\n"
        );
    }

    #[test]
    fn a_comment_cannot_end_early() {
        let settings = [Setting::new("appliance.a", 1).with_comment(vec!["x\nappliance.enable = true;".into()])];
        let err = module(&[], "h", &settings).unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
    }
}
