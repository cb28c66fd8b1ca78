//! The layers of docs/architecture.md, enforced on `src/`: each top-level
//! module belongs to one group, and a group may import only the groups its
//! row of the table names. Every `crate::…` path of every file is checked.
//! No exceptions: an import across the table fails the test (issue 20,
//! item 3 removed the last ones).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::support::root;

/// Where code runs and what it may import (docs/architecture.md, "Layers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    /// Terminal, diagnostics, the spec's schema and parser, runsc's flag table.
    Foundation,
    /// The bootstrap plan's schema: what the generator writes and the host reads.
    Schema,
    /// The validated model and the agent kinds; the lints over it.
    Model,
    /// Model → files.
    Render,
    /// On the appliance: reads the plan, never the spec or the model.
    Host,
    /// The CLI and the operator's commands: may use everything.
    Operator,
}

/// The group of a `crate::` path: its top-level module, or `bootstrap::plan`.
fn group_of(module: &str, submodule: Option<&str>) -> Option<Group> {
    Some(match (module, submodule) {
        ("bootstrap", Some("plan")) | ("pairing", Some("config")) => Group::Schema,
        // backup.json's schema: the generator writes it, the host reads it.
        ("backup", Some("config")) => Group::Schema,
        ("term" | "diag" | "spec" | "runsc" | "nixlog" | "formats" | "grants" | "hostnames" | "pins", _) => {
            Group::Foundation
        }
        ("model" | "kinds" | "lint", _) => Group::Model,
        ("render" | "docker" | "output", _) => Group::Render,
        ("bootstrap" | "pairing" | "warden" | "audit" | "backup", _) => Group::Host,
        ("commands" | "cli", _) => Group::Operator,
        // The unit tests' shared helpers (lib.rs, `#[cfg(test)]`).
        ("test_support", _) => return None,
        _ => return None,
    })
}

/// What each group may import.
fn allowed(from: Group, to: Group) -> bool {
    use Group::*;
    from == to
        || match from {
            Foundation => false,
            Schema => to == Foundation,
            Model => matches!(to, Foundation | Schema),
            Render => matches!(to, Foundation | Schema | Model),
            Host => matches!(to, Foundation | Schema),
            Operator => true,
        }
}

/// The group of a file under `src/`, from its path.
fn file_group(relative: &str) -> Option<Group> {
    let mut parts = relative.trim_end_matches(".rs").split('/');
    let top = parts.next()?;
    if matches!(top, "lib" | "main") {
        return Some(Group::Operator);
    }
    group_of(top, parts.next())
}

/// Every `crate::module[::sub]` path in `text`.
fn crate_paths(text: &str) -> Vec<(String, Option<String>)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // e.g. `$crate::`
        }
        let rest = &text[at + "crate::".len()..];
        let ident = |s: &str| {
            let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
            s[..end].to_string()
        };
        let module = ident(rest);
        let after = &rest[module.len()..];
        let sub = after.strip_prefix("::").map(ident).filter(|s| !s.is_empty());
        if !module.is_empty() {
            found.push((module, sub));
        }
    }
    found
}

/// Every import of `text` (a file at `relative` under src/) that crosses
/// the table: (file, the imported module as written).
fn violations(relative: &str, text: &str) -> BTreeSet<(String, String)> {
    let Some(from) = file_group(relative) else {
        return BTreeSet::new();
    };
    crate_paths(text)
        .into_iter()
        .filter_map(|(module, sub)| {
            let to = group_of(&module, sub.as_deref())?;
            let shown = match (module.as_str(), sub.as_deref()) {
                ("bootstrap", Some("plan")) => "bootstrap::plan".to_string(),
                ("pairing", Some("config")) => "pairing::config".to_string(),
                ("backup", Some("config")) => "backup::config".to_string(),
                _ => module,
            };
            (!allowed(from, to)).then(|| (relative.to_string(), shown))
        })
        .collect()
}

fn sources() -> Vec<(String, String)> {
    let src = root().join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&src).unwrap().display().to_string();
                files.push((relative, fs::read_to_string(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn imports_follow_the_layer_table() {
    let found: BTreeSet<(String, String)> = sources()
        .iter()
        .flat_map(|(relative, text)| violations(relative, text))
        .collect();
    assert!(
        found.is_empty(),
        "imports across the layer table of docs/architecture.md (file, module): {found:?}\n\
         hint: move the code to the layer that may use it, or the shared piece down a layer"
    );
}

#[test]
fn every_top_level_module_has_a_row() {
    let src = root().join("src");
    let modules: Vec<String> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|m| !matches!(m.as_str(), "lib" | "main"))
        .collect();
    let missing: Vec<&String> = modules.iter().filter(|m| group_of(m, None).is_none()).collect();
    assert!(
        missing.is_empty(),
        "src/ modules with no layer: {missing:?}\nhint: add each to `group_of` in tests/layers.rs and to the table in docs/architecture.md"
    );
    let doc = fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    for module in &modules {
        assert!(
            doc.contains(&format!("`{module}`")),
            "docs/architecture.md's layer table does not name `{module}`"
        );
    }
}

#[test]
fn a_forbidden_import_is_caught() {
    // The host may not read the model; the model may not call render; the
    // schemas may not reach the model or the on-host code. A `$crate::`
    // macro path is not ours.
    let host = "use crate::model::Appliance;\nfn f() { crate::bootstrap::plan::Plan::default(); }";
    assert_eq!(
        violations("warden/new.rs", host),
        BTreeSet::from([("warden/new.rs".to_string(), "model".to_string())])
    );
    assert_eq!(violations("model/new.rs", "let x = crate::render::json(&v);").len(), 1);
    assert_eq!(
        violations("bootstrap/plan.rs", "use crate::model::X; use crate::term::y;").len(),
        1
    );
    assert_eq!(violations("pairing/config.rs", "use crate::pairing::proof;").len(), 1);
    assert_eq!(violations("render/new.rs", "use crate::pairing::proof;").len(), 1);
    assert!(
        violations(
            "render/new.rs",
            "use crate::model::X; use crate::bootstrap::plan::P; use crate::pairing::config::C;"
        )
        .is_empty()
    );
    assert!(violations("commands/new.rs", "use crate::render::X; use crate::warden::Y;").is_empty());
    assert!(violations("model/new.rs", "macro_rules! m { () => { $crate::render::x() } }").is_empty());
    assert!(Path::new(&root().join("docs/architecture.md")).is_file());
}
