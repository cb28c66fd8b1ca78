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
/// The top-level folders of `src/` are the groups; the generator's folder is
/// split into its three stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    /// `common`: terminal, diagnostics, the egress rules the generator and the warden share.
    Common,
    /// `schema`: the files the generator writes and the hosts read.
    Schema,
    /// `generator::{spec, runsc, formats, pins}`: the spec's schema and parser, runsc's flag table.
    Spec,
    /// `generator::{model, kinds, lint}`: the validated model, the agent kinds, the lints.
    Model,
    /// `generator::{render, docker, output}`: model → files.
    Render,
    /// `on_host`: reads the generated files, never the spec or the model.
    OnHost,
    /// `operator` (and `lib.rs`, `main.rs`): the command line, over everything.
    Operator,
}

/// The group of a `crate::top[::sub]` path.
fn group_of(top: &str, sub: Option<&str>) -> Option<Group> {
    Some(match (top, sub) {
        ("common", _) => Group::Common,
        ("schema", _) => Group::Schema,
        ("generator", Some("spec" | "runsc" | "formats" | "pins")) => Group::Spec,
        ("generator", Some("model" | "kinds" | "lint")) => Group::Model,
        ("generator", Some("render" | "docker" | "output")) => Group::Render,
        ("on_host", _) => Group::OnHost,
        ("operator", _) => Group::Operator,
        // `crate::generator` alone, the unit tests' shared helpers
        // (lib.rs, `#[cfg(test)]`), or a module the table does not know
        // (`every_module_has_a_row` catches that one).
        _ => return None,
    })
}

/// What each group may import.
fn allowed(from: Group, to: Group) -> bool {
    use Group::*;
    from == to
        || match from {
            Common => false,
            Schema | Spec => to == Common,
            Model => matches!(to, Common | Schema | Spec),
            Render => matches!(to, Common | Schema | Spec | Model),
            OnHost => matches!(to, Common | Schema),
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

/// Every `crate::top[::sub]` path in `text`.
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
        let top = ident(rest);
        let after = &rest[top.len()..];
        let sub = after.strip_prefix("::").map(ident).filter(|s| !s.is_empty());
        if !top.is_empty() {
            found.push((top, sub));
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
        .filter_map(|(top, sub)| {
            let to = group_of(&top, sub.as_deref())?;
            let shown = match sub {
                Some(sub) => format!("{top}::{sub}"),
                None => top,
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

/// The modules one level below `src/` and below `src/generator/`, as
/// (top, sub): the names the table must place.
fn modules() -> Vec<(String, Option<String>)> {
    let stems = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .filter(|m| !matches!(m.as_str(), "lib" | "main" | "mod"))
            .collect();
        names.sort();
        names
    };
    let src = root().join("src");
    let mut found = Vec::new();
    for top in stems(&src) {
        if top == "generator" {
            found.extend(
                stems(&src.join("generator"))
                    .into_iter()
                    .map(|sub| (top.clone(), Some(sub))),
            );
        } else {
            found.push((top, None));
        }
    }
    found
}

#[test]
fn every_module_has_a_row() {
    let modules = modules();
    let missing: Vec<_> = modules
        .iter()
        .filter(|(top, sub)| group_of(top, sub.as_deref()).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "src/ modules with no layer: {missing:?}\nhint: add each to `group_of` in tests/layers.rs and to the table in docs/architecture.md"
    );
    let doc = fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    for (top, sub) in &modules {
        let name = match sub {
            Some(sub) => format!("`{sub}`"),
            None => format!("`src/{top}/`"),
        };
        assert!(
            doc.contains(&name),
            "docs/architecture.md's layer table does not name {name}"
        );
    }
}

#[test]
fn a_forbidden_import_is_caught() {
    // The host may not read the model; the model may not call render; the
    // schemas may not reach the model or the on-host code. A `$crate::`
    // macro path is not ours.
    let host = "use crate::generator::model::Appliance;\nfn f() { crate::schema::plan::Plan::default(); }";
    assert_eq!(
        violations("on_host/warden/new.rs", host),
        BTreeSet::from([("on_host/warden/new.rs".to_string(), "generator::model".to_string())])
    );
    assert_eq!(
        violations("generator/model/new.rs", "let x = crate::generator::render::json(&v);").len(),
        1
    );
    assert_eq!(
        violations(
            "schema/plan.rs",
            "use crate::generator::model::X; use crate::common::term::y;"
        )
        .len(),
        1
    );
    assert_eq!(
        violations("schema/pairing.rs", "use crate::on_host::pairing::proof;").len(),
        1
    );
    assert_eq!(
        violations("generator/render/new.rs", "use crate::on_host::pairing::proof;").len(),
        1
    );
    assert!(
        violations(
            "generator/render/new.rs",
            "use crate::generator::model::X; use crate::schema::plan::P; use crate::schema::pairing::C;"
        )
        .is_empty()
    );
    assert!(
        violations(
            "operator/commands/new.rs",
            "use crate::generator::render::X; use crate::on_host::warden::Y;"
        )
        .is_empty()
    );
    assert!(
        violations(
            "generator/model/new.rs",
            "macro_rules! m { () => { $crate::render::x() } }"
        )
        .is_empty()
    );
    assert!(Path::new(&root().join("docs/architecture.md")).is_file());
}
