//! The flake, its lock, the hand-written modules and the generated ones,
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

/// Every `.nix` file under `dir`, sorted, skipping build output and VCS data.
fn nix_files(dir: &Path) -> Vec<PathBuf> {
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

/// The hand-written Nix of the repository (the generated trees are checked
/// in tests/nix.rs).
fn hand_written_nix() -> Vec<PathBuf> {
    let mut files = vec![root().join("flake.nix")];
    files.extend(nix_files(&root().join("modules")));
    files.extend(nix_files(&root().join("nix")));
    files.extend(nix_files(&root().join("images")));
    files
}

/// Every generated host module: the default tree and the examples'.
fn generated_host_modules() -> Vec<PathBuf> {
    let mut trees = vec![root().join("generated")];
    for example in std::fs::read_dir(root().join("examples")).unwrap() {
        trees.push(example.unwrap().path().join("generated"));
    }
    let mut files = Vec::new();
    for tree in trees {
        files.extend(
            nix_files(&tree.join("hosts"))
                .into_iter()
                .filter(|f| f.ends_with("default.nix")),
        );
    }
    files.sort();
    files
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
