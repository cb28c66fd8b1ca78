//! Nix checked by a real Nix (Debian's `nix-bin`): the generated trees hold
//! none, and the Nix gVisor package prints its release.

use crate::flake::nix_files;
use crate::support::{eval_json, nix_instantiate, root};

/// The generated trees are data (JSON, TOML, nftables, text), no Nix: the
/// hand-written loader nix/generated.nix reads them, so nothing generated
/// needs a Nix encoder or a parse check.
#[test]
fn the_generated_trees_hold_no_nix() {
    let mut files = nix_files(&root().join("generated"));
    for example in std::fs::read_dir(root().join("examples")).unwrap() {
        let generated = example.unwrap().path().join("generated");
        if generated.is_dir() {
            files.extend(nix_files(&generated));
        }
    }
    assert!(files.is_empty(), "generated Nix: {files:?}");
    assert!(root().join("generated/appliance.json").is_file());
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
