//! Generated Nix, checked by a real Nix (Debian's `nix-bin`): every file
//! parses, and the encoder's strings and attribute names evaluate back to
//! exactly what went in.

use std::path::{Path, PathBuf};
use std::process::Command;

use agent_appliance::generator::render::nix;
use proptest::prelude::*;

use crate::support::{eval_json, nix_instantiate, root};

fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            nix_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "nix") {
            found.push(path);
        }
    }
}

#[test]
fn every_generated_nix_file_parses() {
    let Some(nix_instantiate) = nix_instantiate() else {
        return;
    };
    let mut files = Vec::new();
    nix_files(&root().join("generated"), &mut files);
    for example in std::fs::read_dir(root().join("examples")).unwrap() {
        let generated = example.unwrap().path().join("generated");
        if generated.is_dir() {
            nix_files(&generated, &mut files);
        }
    }
    // Each tree's index and one module per host (the images are JSON
    // since they became data): 3 in the root tree, 2 in each example.
    assert!(
        files.len() >= 9,
        "expected the committed trees' .nix files, found {}",
        files.len()
    );
    // One call for all files: nix-instantiate --parse takes several.
    let output = Command::new(nix_instantiate)
        .arg("--parse")
        .args(&files)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// Any text Nix can hold (no NUL), weighted towards what Nix interprets.
fn nix_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[\"\\\\$'{}\\n\\r\\t a-z]{0,12}",
        "(\\$\\{|''|\\\\\\$|\\$\\$\\{|'\\$\\{|\\$|\\\\|\")*",
        any::<String>().prop_map(|s| s.replace('\0', "")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn strings_evaluate_back_to_their_input(texts in prop::collection::vec(nix_text(), 1..48)) {
        if nix_instantiate().is_none() { return Ok(()); }
        let list: Vec<String> = texts.iter().map(|t| nix::string(t)).collect();
        let value = eval_json(&format!("[ {} ]", list.join(" ")));
        prop_assert_eq!(value, serde_json::json!(texts));
    }

    #[test]
    fn attribute_names_evaluate_back_to_their_input(names in prop::collection::btree_set(nix_text(), 1..32)) {
        if nix_instantiate().is_none() { return Ok(()); }
        let attrs: Vec<String> = names.iter().enumerate().map(|(i, n)| format!("{} = {i};", nix::attr_name(n))).collect();
        let value = eval_json(&format!("builtins.attrNames {{ {} }}", attrs.join(" ")));
        let mut expected: Vec<&String> = names.iter().collect();
        // Nix sorts attribute names bytewise, as BTreeSet<String> does.
        expected.sort();
        prop_assert_eq!(value, serde_json::json!(expected));
    }
}

#[test]
fn interpolation_and_indented_string_markers_stay_literal() {
    if nix_instantiate().is_none() {
        return;
    }
    let tricky = [
        "${builtins.currentTime}",
        "''${x}''",
        "\\${",
        "$${a}",
        "a\"b",
        "größe ✓\n\t\r",
        "'''",
        "$",
    ];
    let list: Vec<String> = tricky.iter().map(|t| nix::string(t)).collect();
    assert_eq!(eval_json(&format!("[ {} ]", list.join(" "))), serde_json::json!(tricky));
}

/// nix/packages/gvisor.nix links runsc with its release name (nixpkgs'
/// recipe passes only `-s -w`, so its `runsc --version` says
/// `VERSION_MISSING`), for nixpkgs' own gVisor and for the pinned fallback
/// alike. Evaluated with a stand-in for nixpkgs' recipe: `overrideAttrs`
/// and `override` as mkDerivation and callPackage provide them.
#[test]
fn the_nix_gvisor_prints_its_release() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let package = root().join("nix/packages/gvisor.nix");
    let sources = root().join("nix/sources.json");
    let expression = format!(
        r#"
let
  lib = {{ versionAtLeast = a: b: builtins.compareVersions a b >= 0; }};
  # A derivation's attributes with mkDerivation's `overrideAttrs` and
  # callPackage's `override` (which rebuilds with the given buildGoModule).
  recipe = buildGoModule: version: let
    attrs = buildGoModule {{ pname = "gvisor"; inherit version; ldflags = [ "-s" "-w" ]; }};
  in attrs // {{
    overrideAttrs = f: attrs // f attrs;
    override = args: recipe args.buildGoModule version;
  }};
  buildGoModule = args: if builtins.isFunction args then args {{ }} else args;
  source = (builtins.fromJSON (builtins.readFile {sources})).gvisor;
  call = nixpkgsVersion: import {package} {{
    inherit lib buildGoModule source;
    gvisor = recipe buildGoModule nixpkgsVersion;
    fetchFromGitHub = args: "source";
  }};
in {{
  nixpkgs = (call "20260525.0").ldflags;
  pinned = (call "20250512.0").ldflags;
}}
"#,
        sources = sources.display(),
        package = package.display()
    );
    let out = eval_json(&expression);
    let flag = |release: &str| format!("-X gvisor.dev/gvisor/runsc/version.version=release-{release}");
    assert_eq!(out["nixpkgs"], serde_json::json!(["-s", "-w", flag("20260525.0")]));
    assert_eq!(out["pinned"], serde_json::json!(["-s", "-w", flag("20260406.0")]));
}
