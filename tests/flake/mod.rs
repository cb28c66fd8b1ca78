//! The flake, its lock, the hand-written modules and the generated values,
//! checked without nixpkgs (which Nix 2.8 cannot evaluate): every file
//! parses, the flake's outputs are the promised ones (evaluated with stub
//! inputs), the lock pins real GitHub revisions in the format Nix writes,
//! every NixOS option and package attribute we emit is in the NixOS catalog
//! or on a short list naming the nixpkgs file that declares it, and every
//! upstream artifact is pinned by hash or fails with instructions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{eval_json, in_ci, nix_instantiate, require_tool, root, run_nix};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("failed to read `{}`: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("`{}` is not JSON: {e}", path.display()))
}

/// Every `.nix` file under `dir`, sorted, skipping build output and VCS data
/// (also for tests/nix.rs).
pub(crate) fn nix_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | ".git" | "node_modules") {
                    stack.push(path);
                }
            } else if name.ends_with(".nix") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The Nix of the repository, all hand-written (the generated trees are
/// JSON, loaded by nix/generated.nix).
fn hand_written_nix() -> Vec<PathBuf> {
    let mut files = vec![root().join("flake.nix")];
    files.extend(nix_files(&root().join("modules")));
    files.extend(nix_files(&root().join("nix")));
    files.extend(nix_files(&root().join("images")));
    files
}

/// Every generated tree: the default one and the examples'.
fn generated_trees() -> Vec<PathBuf> {
    let mut trees = vec![root().join("generated")];
    for example in std::fs::read_dir(root().join("examples")).unwrap() {
        trees.push(example.unwrap().path().join("generated"));
    }
    trees.sort();
    trees
}

/// Every generated host's option values, `hosts/<host>/options.json` of
/// every generated tree.
fn generated_host_options() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = generated_trees()
        .iter()
        .flat_map(|tree| std::fs::read_dir(tree.join("hosts")).unwrap())
        .map(|host| host.unwrap().path().join("options.json"))
        .collect();
    files.sort();
    files
}

/// The option paths a generated options file sets (`appliance.a.b`): its
/// `appliance` object walked down to the values, which are lists, scalars,
/// generated files (`{"generatedFile": ...}`) and empty sets.
fn json_option_paths(file: &Path) -> BTreeSet<String> {
    fn walk(prefix: &str, value: &Value, paths: &mut BTreeSet<String>) {
        match value.as_object() {
            Some(object) if !object.is_empty() && !object.contains_key("generatedFile") => {
                for (key, value) in object {
                    walk(&format!("{prefix}.{key}"), value, paths);
                }
            }
            _ => {
                paths.insert(prefix.to_string());
            }
        }
    }
    let mut paths = BTreeSet::new();
    walk("appliance", &read_json(file)["appliance"], &mut paths);
    paths
}

/// The generated image descriptions, `generated/images/<name>.json` of the
/// root and of every example: data that images/default.nix builds from.
fn generated_images() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("generated/images")];
    for example in std::fs::read_dir(root().join("examples")).unwrap() {
        dirs.push(example.unwrap().path().join("generated/images"));
    }
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .filter(|dir| dir.is_dir())
        .flat_map(|dir| std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()))
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// The nixpkgs attributes a file uses: `pkgs.<attr>` in Nix, the
/// `packages` names of a generated image description.
fn packages_of(file: &Path) -> BTreeSet<String> {
    if file.extension().is_some_and(|e| e == "json") {
        let description = read_json(file);
        return description["packages"]
            .as_array()
            .unwrap_or_else(|| panic!("`{}` has no packages", file.display()))
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
    }
    package_attrs(&read(file))
}

#[test]
fn every_hand_written_nix_file_parses() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let files = hand_written_nix();
    assert!(
        files.len() >= 15,
        "expected flake.nix, modules/ and nix/, found {files:?}"
    );
    let mut args = vec!["--parse".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, stderr) = run_nix(&args);
    assert!(ok, "{stderr}");
}

mod catalog;
use catalog::{Token, defined_paths, module_files, package_attrs, tokenize};
use outputs::{STUB_LIB, STUB_PKGS};
mod lock;
mod modules;
mod nix_cli;
mod outputs;
mod pins;
mod store;
