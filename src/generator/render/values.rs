//! A host's option values as data: `hosts/<host>/options.json`, each
//! `appliance.<option>` value the spec decided, for the hand-written
//! modules of modules/ to map onto nixpkgs (docs/options.md). The Nix
//! loader (nix/generated.nix) makes it a NixOS module that applies when
//! `appliance.host` names the host. No Nix is written here; what a value
//! means is said once, in its module.
//!
//! A generated file (docker-daemon.json, an agent's config, an image
//! description) is named by a [`GeneratedFile`], `{"generatedFile":
//! "<path relative to the generated directory>"}`, which the loader turns
//! into a path: the one way a value refers to another generated file.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::{Map, Value};

use super::json;

/// A file of the generated tree, by its path relative to the tree's root;
/// written as `{"generatedFile": path}`, a path once loaded.
#[derive(Clone, Serialize)]
pub struct GeneratedFile {
    #[serde(rename = "generatedFile")]
    path: String,
}

impl GeneratedFile {
    /// `relative` to the generated directory: `hosts/hub/synapse.json`.
    /// Names in it are `a-z0-9-` (`model::names`), checked long before,
    /// so anything that is not a plain relative path is a bug.
    pub fn new(relative: impl Into<String>) -> GeneratedFile {
        let path = relative.into();
        let plain = !path.starts_with('/')
            && !path.ends_with('/')
            && path
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && path.chars().all(|c| c.is_ascii_alphanumeric() || "._-+/".contains(c));
        assert!(plain, "bug: `{path}` is not a path inside the generated tree");
        GeneratedFile { path }
    }
}

/// Any serializable data as a JSON value (option values are plain data).
pub fn value<T: Serialize>(data: T) -> Value {
    serde_json::to_value(data).expect("option values serialize to JSON")
}

/// One option of a host: its path (`appliance.docker`), its value and the
/// reasons behind it where the value alone does not show them (written
/// under `notes`, beside the values, which the loader leaves out).
pub struct Setting {
    pub path: &'static str,
    pub value: Value,
    pub notes: Vec<String>,
}

impl Setting {
    pub fn new(path: &'static str, value: impl Serialize) -> Setting {
        Setting {
            path,
            value: self::value(value),
            notes: Vec::new(),
        }
    }

    pub fn with_notes(mut self, lines: Vec<String>) -> Setting {
        self.notes = lines;
        self
    }
}

/// The whole file of a host's options: `about` (what the file is),
/// `notes` (the reasons behind values, by option path) and the values
/// under `appliance`, nested by option path. Keys are sorted, so the same
/// spec gives the same bytes. Every path is under `appliance.` (the only
/// options the loader sets); another is a bug, not dropped.
pub fn options_file(about: &str, settings: &[Setting]) -> Result<Vec<u8>> {
    let mut values = Map::new();
    let mut notes = BTreeMap::new();
    for setting in settings {
        if !setting.path.starts_with("appliance.") {
            bail!("bug: option `{}` is not under `appliance.`", setting.path);
        }
        insert(&mut values, setting.path, setting.value.clone())?;
        if !setting.notes.is_empty() {
            notes.insert(setting.path, &setting.notes);
        }
    }
    let file = serde_json::json!({
        "about": about,
        "notes": notes,
        "appliance": values.remove("appliance").unwrap_or_else(|| Value::Object(Map::new())),
    });
    json(&file)
}

/// Sets `path` (dotted) in `root` to `value`; setting a path twice is a bug.
fn insert(root: &mut Map<String, Value>, path: &str, value: Value) -> Result<()> {
    let (parents, last) = match path.rsplit_once('.') {
        Some((parents, last)) => (parents.split('.').collect::<Vec<_>>(), last),
        None => (Vec::new(), path),
    };
    let mut map = root;
    for part in parents {
        let entry = map.entry(part.to_string()).or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(inner) = entry else {
            bail!("bug: option `{path}` is set inside a value that is not a set");
        };
        map = inner;
    }
    if map.insert(last.to_string(), value).is_some() {
        bail!("bug: option `{path}` is set twice");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_nest_by_path_with_their_notes_beside_them() {
        let settings = [
            Setting::new("appliance.a", ["x"]),
            Setting::new("appliance.b.c", true).with_notes(vec!["why b.c".into()]),
            Setting::new("appliance.b.d", GeneratedFile::new("hosts/h/d.json")),
        ];
        let text = String::from_utf8(options_file("head", &settings).unwrap()).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "about": "head",
                "notes": {"appliance.b.c": ["why b.c"]},
                "appliance": {"a": ["x"], "b": {"c": true, "d": {"generatedFile": "hosts/h/d.json"}}},
            })
        );
    }

    #[test]
    fn an_option_set_twice_is_a_bug() {
        let settings = [Setting::new("appliance.a", 1), Setting::new("appliance.a", 2)];
        assert!(options_file("", &settings).is_err());
    }

    #[test]
    fn an_option_outside_appliance_is_a_bug_not_dropped() {
        for path in ["services.a", "appliance", "appliancex.a"] {
            let settings = [Setting::new("appliance.a", 1), Setting::new(path, 2)];
            let error = options_file("", &settings).unwrap_err();
            assert!(error.to_string().contains(path), "{path}: {error}");
        }
    }

    #[test]
    fn generated_files_are_plain_paths_inside_the_tree() {
        for bad in ["/etc/x", "../x", "a/../b", "a//b", "a/", "a b", "a\"b"] {
            assert!(std::panic::catch_unwind(|| GeneratedFile::new(bad)).is_err(), "{bad:?}");
        }
    }
}
