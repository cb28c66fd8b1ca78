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

use crate::common::{eval_json, in_ci, nix_instantiate, require_tool, root, run_nix};

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

fn generated_images() -> Vec<PathBuf> {
    let mut files = nix_files(&root().join("generated/images"));
    for example in std::fs::read_dir(root().join("examples")).unwrap() {
        let images = example.unwrap().path().join("generated/images");
        if images.is_dir() {
            files.extend(nix_files(&images));
        }
    }
    files
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

// ---------------------------------------------------------------------------
// The flake's outputs, evaluated with stub inputs.

/// A stand-in for nixpkgs: just the `lib` functions flake.nix and
/// nix/hosts.nix call, a `nixosSystem` that returns its arguments, and a
/// package set whose packages are labels. Evaluating the flake's outputs
/// against it proves their names and wiring; what nixpkgs does with them is
/// left to `nix flake check` on a machine with Nix >= 2.18.
const STUB_LIB: &str = r#"
rec {
  inherit (builtins) attrNames mapAttrs listToAttrs length head elemAt elem filter;
  genAttrs = names: f: listToAttrs (map (name: { inherit name; value = f name; }) names);
  filterAttrs = pred: set: listToAttrs (builtins.concatMap
    (name: if pred name set.${name} then [ { inherit name; value = set.${name}; } ] else [ ])
    (attrNames set));
  nameValuePair = name: value: { inherit name value; };
  optionalAttrs = cond: set: if cond then set else { };
  optional = cond: x: if cond then [ x ] else [ ];
  getName = pkg: pkg.pname or pkg.name;
  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
  any = pred: list: builtins.any pred list;
  attrValues = set: map (name: set.${name}) (attrNames set);
  concatMap = builtins.concatMap;
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
  nixosSystem = args: {
    stubArgs = args;
    config.system.build = {
      googleComputeImage.stubImage = "googleComputeImage";
      sdImage = {
        stubImage = "sdImage";
        # What the configuration's inline modules set as build platform.
        buildPlatforms = builtins.concatMap (m: if m ? nixpkgs.buildPlatform then [ m.nixpkgs.buildPlatform ] else [ ])
          (builtins.filter builtins.isAttrs args.modules);
      };
    };
  };
}
"#;

const STUB_PKGS: &str = r#"
{ system, overlays ? [ ], config ? { } }:
{
  agent-appliance = { stubPackage = "agent-appliance-${system}"; stubConfig = config; };
  nixfmt.stubPackage = "nixfmt-${system}";
}
"#;

fn flake_outputs() -> Option<Value> {
    nix_instantiate()?;
    let stub = tempfile::tempdir().unwrap();
    std::fs::write(stub.path().join("lib.nix"), STUB_LIB).unwrap();
    std::fs::write(stub.path().join("default.nix"), STUB_PKGS).unwrap();
    let expression = format!(
        r#"
let
  flake = import {root}/flake.nix;
  stub = {stub};
  nixpkgs = {{ lib = import (stub + "/lib.nix"); outPath = stub; }};
  self = flake.outputs {{ inherit self nixpkgs; }};
  names = builtins.mapAttrs (_: builtins.attrNames);
in {{
  inputs = builtins.mapAttrs (_: input: input.url) flake.inputs;
  outputs = builtins.attrNames self;
  packages = names self.packages;
  checks = names self.checks;
  devShells = names self.devShells;
  formatter = builtins.mapAttrs (_: f: f.stubPackage) self.formatter;
  appliance = builtins.mapAttrs (_: p: p.appliance.stubPackage) self.packages;
  nixosModules = builtins.attrNames self.nixosModules;
  moduleFile = self.nixosModules.default._file;
  moduleImportsFunction = builtins.isFunction (builtins.head self.nixosModules.default.imports);
  # The nixpkgs `nix build .#images.<name>` and the packages build with.
  pkgsConfig = builtins.mapAttrs (_: p: {{
    unfree = builtins.filter (name: p.appliance.stubConfig.allowUnfreePredicate {{ pname = name; }})
      [ "nvidia-x11" "cuda_cudart" "libcublas" "vscode" ];
    cuda = p.appliance.stubConfig.cudaCapabilities or null;
  }}) self.packages;
  overlays = builtins.attrNames self.overlays;
  overlayProvides = builtins.attrNames (self.overlays.default {{ }} {{ }});
  configurations = builtins.mapAttrs (_: c:
    let settings = builtins.elemAt c.stubArgs.modules 2; in {{
      target = baseNameOf (toString (builtins.elemAt c.stubArgs.modules 1));
      platform = settings.nixpkgs.hostPlatform;
      overlays = builtins.length settings.nixpkgs.overlays;
      # The unfree predicate admits the NVIDIA/CUDA packages only.
      unfree = builtins.filter (name: settings.nixpkgs.config.allowUnfreePredicate {{ pname = name; }})
        [ "nvidia-x11" "cuda_cudart" "libcublas" "vscode" "steam" "unrar" ];
      cuda = settings.nixpkgs.config.cudaCapabilities or null;
      inherit (settings.appliance) enable host;
    }}) self.nixosConfigurations;
  images = {{
    gce = self.packages.x86_64-linux.gce-image.stubImage;
    rpi4-cross = self.packages.x86_64-linux.rpi4-cross.stubImage;
    rpi4-cross-build-platforms = self.packages.x86_64-linux.rpi4-cross.buildPlatforms;
    rpi4-build-platforms = self.packages.aarch64-linux.rpi4.buildPlatforms;
    rpi4 = self.packages.aarch64-linux.rpi4.stubImage;
  }};
  legacyImages = builtins.mapAttrs (_: l: builtins.attrNames l.images) self.legacyPackages;
  legacyNames = builtins.mapAttrs (_: builtins.attrNames) self.legacyPackages;
  rpi4OnX86 = builtins.tryEval self.legacyPackages.x86_64-linux.rpi4;
}}
"#,
        root = root().display(),
        stub = stub.path().display(),
    );
    Some(eval_json(&expression))
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
}

#[test]
fn the_flake_has_the_promised_outputs() {
    let Some(out) = flake_outputs() else {
        return;
    };
    assert_eq!(
        out["inputs"],
        serde_json::json!({ "nixpkgs": "github:NixOS/nixpkgs/nixos-26.05" })
    );
    assert_eq!(
        strings(&out["outputs"]),
        [
            "checks",
            "devShells",
            "formatter",
            "legacyPackages",
            "nixosConfigurations",
            "nixosModules",
            "overlays",
            "packages"
        ]
    );
    // x86_64 gets the Pi's image only cross-compiled, under its own name:
    // `packages.x86_64-linux.*` are x86_64 derivations.
    assert_eq!(
        strings(&out["packages"]["x86_64-linux"]),
        [
            "appliance",
            "default",
            "gce-image",
            "gce-image-hub",
            "rpi4-cross",
            "rpi4-cross-pi"
        ]
    );
    assert_eq!(
        strings(&out["packages"]["aarch64-linux"]),
        ["appliance", "default", "rpi4", "rpi4-pi"]
    );
    // The GCE image is the hub configuration's googleComputeImage, the SD
    // image the Pi's sdImage: native on aarch64, built on x86_64 for the
    // cross variant.
    assert_eq!(
        out["images"],
        serde_json::json!({
            "gce": "googleComputeImage",
            "rpi4-cross": "sdImage",
            "rpi4-cross-build-platforms": ["x86_64-linux"],
            "rpi4": "sdImage",
            "rpi4-build-platforms": [],
        })
    );
    // `nix build .#images.<name>`: every image, for the systems its hosts run.
    // `nix build .#rpi4` on x86_64 ends at a throw that says where it is.
    assert_eq!(
        out["legacyNames"],
        serde_json::json!({ "x86_64-linux": ["images", "rpi4"], "aarch64-linux": ["images"] })
    );
    assert_eq!(out["rpi4OnX86"]["success"], false);
    assert_eq!(
        out["legacyImages"],
        serde_json::json!({
            "x86_64-linux": ["docker-in-gvisor", "hermes", "ollama-cuda", "openclaw", "picoclaw", "searxng", "webextract"],
            "aarch64-linux": ["picoclaw"],
        })
    );
    // nixpkgs is instantiated once per system, and the CLI comes from it.
    assert_eq!(
        out["appliance"],
        serde_json::json!({ "x86_64-linux": "agent-appliance-x86_64-linux", "aarch64-linux": "agent-appliance-aarch64-linux" })
    );
    assert_eq!(
        out["formatter"],
        serde_json::json!({ "x86_64-linux": "nixfmt-x86_64-linux", "aarch64-linux": "nixfmt-aarch64-linux" })
    );
    assert_eq!(
        strings(&out["checks"]["x86_64-linux"]),
        ["generated-up-to-date", "hub-boots", "hub-scenario"]
    );
    assert_eq!(strings(&out["checks"]["aarch64-linux"]), ["generated-up-to-date"]);
    assert_eq!(strings(&out["devShells"]["x86_64-linux"]), ["default"]);
    assert_eq!(strings(&out["devShells"]["aarch64-linux"]), ["default"]);
    assert_eq!(strings(&out["nixosModules"]), ["default"]);
    // The exported module names its file for the module system's errors.
    assert!(
        out["moduleFile"]
            .as_str()
            .unwrap()
            .ends_with("/flake.nix#nixosModules.default"),
        "{}",
        out["moduleFile"]
    );
    assert_eq!(out["moduleImportsFunction"], true);
    // `nix build .#images.ollama-cuda` gets the same unfree allowance as the
    // configurations, and CUDA for the GPUs of that system's hosts only (the
    // hub's L4: sm_89).
    assert_eq!(
        out["pkgsConfig"],
        serde_json::json!({
            "x86_64-linux": { "unfree": ["nvidia-x11", "cuda_cudart", "libcublas"], "cuda": ["8.9"] },
            "aarch64-linux": { "unfree": ["nvidia-x11", "cuda_cudart", "libcublas"], "cuda": null },
        })
    );
    assert_eq!(strings(&out["overlays"]), ["default"]);
    // One configuration per host of generated/default.nix, with its
    // target's profile and system, selecting its generated module.
    assert_eq!(
        out["configurations"],
        serde_json::json!({
            "hub": { "target": "gce.nix", "platform": "x86_64-linux", "enable": true, "host": "hub",
                     "overlays": 1, "unfree": ["nvidia-x11", "cuda_cudart", "libcublas"], "cuda": ["8.9"] },
            "pi": { "target": "rpi4.nix", "platform": "aarch64-linux", "enable": true, "host": "pi",
                    "overlays": 1, "unfree": ["nvidia-x11", "cuda_cudart", "libcublas"], "cuda": null },
        })
    );
}

/// nixpkgs' `lib` functions images/ calls, and a `pkgs` whose dockerTools
/// return their arguments: enough to evaluate what the generated image
/// calls pass and what images/build.nix makes of them.
const STUB_IMAGE_PKGS: &str = r#"
let
  lib = rec {
    throwIfNot = cond: msg: value: if cond then value else throw msg;
    versions.major = v: builtins.head (builtins.splitVersion v);
    getName = pkg: pkg.pname;
    optional = cond: x: if cond then [ x ] else [ ];
    concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
    escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";
  };
  package = pname: version: { inherit pname version; type = "derivation"; };
in
{
  inherit lib;
  pkgs = {
    inherit lib;
    dockerTools = {
      streamLayeredImage = args: { type = "derivation"; stubArgs = args; };
      fakeNss.override = args: { pname = "fake-nss"; stubNss = args; };
    };
    appliance-openclaw = package "openclaw" "2026.9.6";
    appliance-picoclaw = package "picoclaw" "0.2.9";
    appliance-hermes = package "hermes-agent" "0.19.0";
    docker_29 = package "docker" "29.1.2";
    chromium = package "chromium" "1";
    cacert = package "cacert" "1";
    tini = package "tini" "1";
    gh = package "gh" "1";
    bashInteractive = package "bash" "1";
    coreutils = package "coreutils" "1";
    docker-client = package "docker" "1";
    appliance-dind-start = package "appliance-dind-start" "1";
    appliance-hermes-start = package "appliance-hermes-start" "1";
    appliance-openclaw-start = package "appliance-openclaw-start" "1";
  };
}
"#;

fn image_stub_expression(body: &str) -> (tempfile::TempDir, String) {
    let stub = tempfile::tempdir().unwrap();
    std::fs::write(stub.path().join("stub.nix"), STUB_IMAGE_PKGS).unwrap();
    let expression = format!(
        r#"
let
  stub = import {stub}/stub.nix;
  inherit (stub) lib;
  imagesWith = pkgs: import {root}/images {{ inherit pkgs lib; }};
  generated = pkgs: name: import ({root}/generated/images + "/${{name}}.nix") {{ inherit pkgs; images = imagesWith pkgs; }};
in {body}
"#,
        stub = stub.path().display(),
        root = root().display(),
    );
    (stub, expression)
}

#[test]
fn images_create_their_users_and_writable_paths_and_check_versions_lazily() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let (_stub, expression) = image_stub_expression(
        r#"{
  openclaw = let args = (generated stub.pkgs "openclaw").stubArgs; in {
    inherit (args) name tag fakeRootCommands;
    inherit (args.config) User Env Entrypoint;
    nss = (builtins.elemAt args.contents (builtins.length args.contents - 1)).stubNss;
    label = args.config.Labels."org.opencontainers.image.version";
  };
  dindUser = (generated stub.pkgs "docker-in-gvisor").stubArgs.config.User;
  # The image's definition is a derivation without forcing its packages:
  # the module system reads it (for its priority) even when a
  # configuration replaces it.
  lazy = (generated (stub.pkgs // { appliance-openclaw = throw "forced"; }) "openclaw").type;
}"#,
    );
    let out = eval_json(&expression);
    let openclaw = &out["openclaw"];
    assert_eq!(openclaw["name"], "agent-appliance/openclaw");
    assert_eq!(openclaw["tag"], "2026.9.6");
    assert_eq!(openclaw["User"], "1000:1000");
    assert_eq!(openclaw["label"], "2026.9.6");
    assert_eq!(openclaw["Entrypoint"][3], "appliance-openclaw-start");
    assert!(strings(&openclaw["Env"]).contains(&"HOME=/home/node"));
    assert_eq!(
        openclaw["nss"],
        serde_json::json!({
            "extraPasswdLines": ["node:x:1000:1000:node:/home/node:/sbin/nologin"],
            "extraGroupLines": ["node:x:1000:"],
        })
    );
    let commands = openclaw["fakeRootCommands"].as_str().unwrap();
    for expected in [
        "mkdir -p .'/home/node'\nchown 1000:1000 .'/home/node'\nchmod 0700 .'/home/node'",
        "chown 1000:1000 .'/home/node/.openclaw'\nchmod 0700 .'/home/node/.openclaw'",
        "chown 0:0 .'/tmp'\nchmod 1777 .'/tmp'",
    ] {
        assert!(commands.contains(expected), "{commands}");
    }
    assert_eq!(out["dindUser"], "0:0");
    assert_eq!(out["lazy"], "derivation");

    // A tag that does not match the package fails when the image is built
    // (its layer's commands are needed), with the fix.
    let (_stub, expression) = image_stub_expression(
        r#"(generated (stub.pkgs // { appliance-openclaw = stub.pkgs.appliance-openclaw // { version = "2026.10.1"; }; }) "openclaw").stubArgs.fakeRootCommands"#,
    );
    let (ok, _, stderr) = run_nix(&["--eval", "--strict", "-E", &expression]);
    assert!(!ok);
    assert!(
        stderr.contains("image agent-appliance/openclaw:2026.9.6 would contain openclaw 2026.10.1"),
        "{stderr}"
    );
}

/// The module arguments a generated host module takes, with a `lib` whose
/// `mkIf` keeps its condition (so both sides can be asserted) and
/// `applianceImages` that return what they are called with.
const STUB_HOST_ARGS: &str = r#"
useNetworkd:
let
  lib = {
    mkIf = condition: content: { _if = condition; inherit content; };
    mkOverride = _priority: value: value;
    mkDefault = value: { _default = value; };
    importJSON = path: builtins.fromJSON (builtins.readFile path);
    getExe = pkg: "${pkg.name}/bin/${pkg.name}";
    getExe' = pkg: exe: "${pkg.name}/bin/${exe}";
    mapAttrs = builtins.mapAttrs;
    elem = builtins.elem;
    versionAtLeast = a: b: builtins.compareVersions a b >= 0;
    escapeShellArgs = args: builtins.concatStringsSep " " (map (a: "'${a}'") args);
  };
  package = name: { inherit name; version = "20260406.0"; };
in
{
  inherit lib;
  config = {
    appliance = { enable = true; host = "pi"; };
    networking.wireguard = { inherit useNetworkd; };
    services.xserver.videoDrivers = [ ];
    virtualisation.docker.package = package "docker";
    boot.kernelPackages.nvidiaPackages = { };
    hardware.nvidia.package.version = "0";
  };
  pkgs = {
    gvisor = package "gvisor";
    wireguard-tools = package "wireguard-tools";
    coreutils = package "coreutils";
    agent-appliance = package "appliance";
    ollama-cuda = package "ollama-cuda";
  };
  utils.escapeSystemdExecArgs = args: builtins.concatStringsSep " " (map toString args);
  applianceImages = builtins.mapAttrs (name: _: args: { image = name; inherit (args) tag writable; }) {
    openclaw = 1; picoclaw = 1; hermes = 1; docker-in-gvisor = 1; ollama = 1; ollama-cuda = 1; searxng = 1; webextract = 1;
  };
}
"#;

#[test]
fn generated_host_modules_evaluate_with_both_wireguard_backends() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let stub = tempfile::tempdir().unwrap();
    std::fs::write(stub.path().join("args.nix"), STUB_HOST_ARGS).unwrap();
    let expression = format!(
        r#"
let
  host = name: useNetworkd:
    let
      args = import {stub}/args.nix useNetworkd;
      module = import {root}/generated/hosts/${{name}} (args // {{ config = args.config // {{ appliance = {{ enable = true; host = name; }}; }}; }});
    in module.config.content;
  pi = host "pi";
  hub = host "hub" false;
in {{
  scripted = {{
    generate = (pi false).networking.wireguard.interfaces.wg-appliance.generatePrivateKeyFile;
    ownKeyUnit = (pi false).systemd.services.appliance-wireguard-key._if;
  }};
  networkd = {{
    generate = (pi true).networking.wireguard.interfaces.wg-appliance.generatePrivateKeyFile;
    ownKeyUnit = (pi true).systemd.services.appliance-wireguard-key._if;
    before = (pi true).systemd.services.appliance-wireguard-key.content.before;
  }};
  piSandbox = {{
    inherit ((pi false).systemd.services.docker-balthasar-pi) after requires wants unitConfig;
    path = (pi false).systemd.paths.docker-balthasar-pi.pathConfig;
    image = (pi false).virtualisation.oci-containers.containers.balthasar-pi.imageStream;
  }};
  synapse = hub.systemd.services.matrix-synapse;
  ollama = {{ inherit (hub.systemd.services.docker-ollama) after requires; }};
  nonlocalBind = {{ hub = hub.boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind"; pi = (pi false) ? boot; }};
  stateVersion = hub ? system;
  rootLogin = hub.services.openssh.settings.PermitRootLogin;
  passwords = hub.services.openssh.settings.PasswordAuthentication;
  driverIsDefault = hub.hardware.nvidia.package ? _default;
  bootstrap = hub.systemd.services.appliance-bootstrap.serviceConfig.ExecStart;
  network = hub.systemd.services.appliance-network.script;
  toolkit = hub ? hardware.nvidia-container-toolkit;
  unfree = hub ? nixpkgs;
}}
"#,
        stub = stub.path().display(),
        root = root().display(),
    );
    let out = eval_json(&expression);
    // nixpkgs' scripted backend makes the key; with networkd (which
    // asserts against generatePrivateKeyFile) our unit does, before
    // systemd-networkd reads it.
    assert_eq!(
        out["scripted"],
        serde_json::json!({ "generate": true, "ownKeyUnit": false })
    );
    assert_eq!(
        out["networkd"],
        serde_json::json!({ "generate": false, "ownKeyUnit": true, "before": ["systemd-networkd.service"] })
    );
    let device = "sys-subsystem-net-devices-wg\\x2dappliance.device";
    let pi = &out["piSandbox"];
    assert_eq!(
        pi["after"],
        serde_json::json!([
            "appliance-network.service",
            "network-online.target",
            device,
            "wireguard-wg-appliance.service"
        ])
    );
    assert_eq!(pi["requires"], serde_json::json!(["appliance-network.service", device]));
    assert_eq!(pi["wants"], serde_json::json!(["network-online.target"]));
    let env = "/var/lib/appliance/secrets/balthasar-pi/env";
    assert_eq!(pi["unitConfig"], serde_json::json!({ "ConditionPathExists": env }));
    assert_eq!(
        pi["path"],
        serde_json::json!({ "PathExists": env, "Unit": "docker-balthasar-pi.service" })
    );
    assert_eq!(pi["image"]["image"], "picoclaw");
    assert_eq!(pi["image"]["tag"], "0.2.9");
    assert_eq!(pi["image"]["writable"][0]["path"], "/var/lib/picoclaw");
    // Synapse binds the overlay address too: it starts after the address is
    // up (the scripted backend's unit; the device appears before it), but
    // does not need WireGuard: the address binds non-locally, and Matrix
    // stays up on loopback and the bridge when WireGuard fails.
    let wireguard = "wireguard-wg-appliance.service";
    assert_eq!(
        out["synapse"]["after"],
        serde_json::json!([
            "appliance-network.service",
            "appliance-secrets.service",
            "network-online.target",
            device,
            wireguard
        ])
    );
    assert_eq!(
        out["synapse"]["requires"],
        serde_json::json!(["appliance-network.service", "appliance-secrets.service"])
    );
    assert_eq!(out["nonlocalBind"], serde_json::json!({ "hub": 1, "pi": false }));
    // The GPU sandbox starts after nixpkgs' CDI generator has written the
    // specs its `--device=nvidia.com/gpu=all` names, and the overlay-only
    // publish waits for the address.
    let cdi = "nvidia-container-toolkit-cdi-generator.service";
    assert_eq!(
        out["ollama"]["after"],
        serde_json::json!([
            "appliance-network.service",
            cdi,
            "network-online.target",
            device,
            wireguard
        ])
    );
    assert_eq!(
        out["ollama"]["requires"],
        serde_json::json!(["appliance-network.service", cdi, device])
    );
    // On an existing host: its own state version, root-login policy and
    // driver win over ours (the driver still must be on nvproxy's list);
    // passwords stay off at normal priority.
    assert_eq!(out["stateVersion"], false);
    assert_eq!(out["rootLogin"], serde_json::json!({ "_default": "prohibit-password" }));
    assert_eq!(out["passwords"], false);
    assert_eq!(out["driverIsDefault"], true);
    let bootstrap = out["bootstrap"].as_str().unwrap();
    assert!(
        bootstrap.starts_with("appliance/bin/appliance bootstrap --plan /"),
        "{bootstrap}"
    );
    assert!(bootstrap.ends_with("-plan.json"), "{bootstrap}");
    assert!(
        out["network"]
            .as_str()
            .unwrap()
            .contains("'--opt=com.docker.network.driver.mtu=1460'")
    );
    // Ollama's sandbox uses the GPUs through CDI, and the module leaves
    // nixpkgs' configuration alone.
    assert_eq!(out["toolkit"], true);
    assert_eq!(out["unfree"], false);
}

#[test]
fn every_image_function_is_the_image_src_model_describes() {
    use agent_appliance::model::image::{self, VersionCheck};
    let index = read(&root().join("images/default.nix"));
    for layout in image::all() {
        let file = root().join(format!("images/{}.nix", layout.name));
        let text = read(&file);
        let (package, kind) = match layout.version_check {
            VersionCheck::Exact { package } => (package, "exact"),
            VersionCheck::Major { package } => (package, "major"),
            VersionCheck::MajorMinor { package } => (package, "minor"),
            VersionCheck::Unreleased { package } => (package, "none"),
        };
        for expected in [
            format!("name = \"{}\";", layout.repository),
            format!("versioned = pkgs.{package};"),
            format!("match = \"{kind}\";"),
        ] {
            assert!(text.contains(&expected), "{} lacks `{expected}`", file.display());
        }
        assert!(
            index.contains(&format!("{} = import ./{}.nix", layout.name, layout.name)),
            "images/default.nix does not export `{}`",
            layout.name
        );
    }
}

#[test]
fn the_overlay_provides_every_package_the_generated_nix_calls() {
    let Some(out) = flake_outputs() else {
        return;
    };
    let provided: BTreeSet<&str> = strings(&out["overlayProvides"]).into_iter().collect();
    for required in ["agent-appliance", "gvisor"] {
        assert!(
            provided.contains(required),
            "the overlay lacks `{required}`: {provided:?}"
        );
    }
    let mut files = generated_images();
    files.extend(generated_host_modules());
    files.extend(nix_files(&root().join("images")));
    for file in files {
        for attr in package_attrs(&read(&file)) {
            if attr.starts_with("appliance-") || attr == "agent-appliance" {
                assert!(
                    provided.contains(attr.as_str()),
                    "`{}` uses `pkgs.{attr}`, which nix/overlay.nix does not provide",
                    file.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// flake.lock

#[test]
fn the_lock_pins_real_github_revisions_in_the_format_nix_writes() {
    let lock = read_json(&root().join("flake.lock"));
    assert_eq!(lock["version"], 7, "Nix (2.8 up to today's) writes lock version 7");
    assert_eq!(lock["root"], "root");
    let nodes = lock["nodes"].as_object().unwrap();
    let root_inputs = nodes["root"]["inputs"].as_object().unwrap();
    assert_eq!(root_inputs.keys().collect::<Vec<_>>(), ["nixpkgs"]);
    for (name, node) in nodes.iter().filter(|(name, _)| *name != "root") {
        let locked = &node["locked"];
        let keys: Vec<&String> = locked.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["lastModified", "narHash", "owner", "repo", "rev", "type"],
            "node `{name}`: a github lock has exactly these keys"
        );
        assert_eq!(locked["type"], "github", "node `{name}`");
        let rev = locked["rev"].as_str().unwrap();
        assert!(
            rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "node `{name}`: `{rev}` is not a full commit id"
        );
        let nar_hash = locked["narHash"].as_str().unwrap();
        assert!(
            nar_hash.starts_with("sha256-") && nar_hash.len() == 51 && nar_hash.ends_with('='),
            "node `{name}`: `{nar_hash}` is not an SRI sha256"
        );
        assert!(!nar_hash.contains("AAAAAAAAAA"), "node `{name}`: a placeholder hash");
        assert!(locked["lastModified"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(node["original"]["type"], "github");
        assert_eq!(node["original"]["owner"], locked["owner"]);
        assert_eq!(node["original"]["repo"], locked["repo"]);
    }
    assert_eq!(nodes["nixpkgs"]["original"]["ref"], "nixos-26.05");
    assert!(read(&root().join("flake.nix")).contains("\"github:NixOS/nixpkgs/nixos-26.05\""));
}

// ---------------------------------------------------------------------------
// Option paths and package attributes against the catalog.

/// Options the catalog lacks but nixpkgs declares, each with the file that
/// declares it (read at the stated path; the option names were checked
/// against that file where it is in the public index).
const OPTIONS_NOT_IN_CATALOG: &[(&str, &str)] = &[
    // The egress layer (src/render/egress.rs); read from nixpkgs' module
    // sources with the search tool.
    (
        "networking.nftables.enable",
        "nixos/modules/services/networking/nftables.nix",
    ),
    (
        "networking.nftables.flushRuleset",
        "nixos/modules/services/networking/nftables.nix",
    ),
    // Synapse's database (src/render/host.rs), read in nixpkgs'
    // services/databases/postgresql.nix.
    (
        "services.postgresql.enable",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    (
        "services.postgresql.ensureDatabases",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    (
        "services.postgresql.ensureUsers",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    (
        "services.postgresql.initdbArgs",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    (
        "services.postgresql.settings",
        "nixos/modules/services/databases/postgresql.nix",
    ),
    // An attribute set of sysctl keys (free-form below; a key holds dots,
    // which this extractor splits on).
    ("boot.kernel.sysctl", "nixos/modules/config/sysctl.nix"),
    // Its own example is the same substitution (a user the build-time
    // ruleset check lacks).
    (
        "networking.nftables.preCheckRuleset",
        "nixos/modules/services/networking/nftables.nix",
    ),
    (
        "networking.nftables.tables.<name>.family",
        "nixos/modules/services/networking/nftables.nix",
    ),
    (
        "networking.nftables.tables.<name>.content",
        "nixos/modules/services/networking/nftables.nix",
    ),
    ("services.squid.enable", "nixos/modules/services/networking/squid.nix"),
    (
        "services.squid.configText",
        "nixos/modules/services/networking/squid.nix",
    ),
    (
        "services.dnsmasq.enable",
        "nixos/modules/services/networking/dnsmasq.nix",
    ),
    (
        "services.dnsmasq.resolveLocalQueries",
        "nixos/modules/services/networking/dnsmasq.nix",
    ),
    (
        "services.dnsmasq.settings",
        "nixos/modules/services/networking/dnsmasq.nix",
    ),
    ("assertions", "nixos/modules/misc/assertions.nix"),
    ("warnings", "nixos/modules/misc/assertions.nix"),
    (
        "systemd.tmpfiles.rules",
        "nixos/modules/system/boot/systemd/tmpfiles.nix",
    ),
    (
        "services.xserver.videoDrivers",
        "nixos/modules/services/x11/xserver.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.ips",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.listenPort",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.privateKeyFile",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.peers",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    (
        "networking.wireguard.interfaces.<name>.generatePrivateKeyFile",
        "nixos/modules/services/networking/wireguard.nix",
    ),
    ("systemd.paths.<name>.description", "nixos/lib/systemd-unit-options.nix"),
    (
        "systemd.targets.<name>.description",
        "nixos/lib/systemd-unit-options.nix",
    ),
    ("systemd.targets.<name>.wantedBy", "nixos/lib/systemd-unit-options.nix"),
    ("systemd.targets.<name>.requires", "nixos/lib/systemd-unit-options.nix"),
    ("systemd.targets.<name>.after", "nixos/lib/systemd-unit-options.nix"),
    ("systemd.paths.<name>.wantedBy", "nixos/lib/systemd-unit-options.nix"),
    ("systemd.paths.<name>.pathConfig", "nixos/lib/systemd-unit-options.nix"),
    ("_module.args", "lib/modules.nix"),
    ("boot.kernelParams", "nixos/modules/system/boot/kernel.nix"),
    (
        "boot.loader.grub.enable",
        "nixos/modules/system/boot/loader/grub/grub.nix",
    ),
    (
        "boot.loader.generic-extlinux-compatible.enable",
        "nixos/modules/system/boot/loader/generic-extlinux-compatible/default.nix",
    ),
    ("virtualisation.memorySize", "nixos/modules/virtualisation/qemu-vm.nix"),
    ("virtualisation.cores", "nixos/modules/virtualisation/qemu-vm.nix"),
];

/// Package attributes the catalog lacks, with the nixpkgs file defining
/// them (or this repository's overlay).
const PACKAGES_NOT_IN_CATALOG: &[(&str, &str)] = &[
    ("agent-appliance", "nix/overlay.nix (this repository)"),
    ("searxng", "pkgs/by-name/se/searxng/package.nix"),
    ("appliance-openclaw", "nix/overlay.nix (this repository)"),
    ("appliance-picoclaw", "nix/overlay.nix (this repository)"),
    ("appliance-hermes", "nix/overlay.nix (this repository)"),
    ("appliance-code-runner", "nix/overlay.nix (this repository)"),
    ("appliance-dind-start", "nix/overlay.nix (this repository)"),
    ("appliance-hermes-start", "nix/overlay.nix (this repository)"),
    ("appliance-openclaw-start", "nix/overlay.nix (this repository)"),
    ("appliance-webextract", "nix/overlay.nix (this repository)"),
    (
        "python3Packages",
        "pkgs/top-level/python-packages.nix (trafilatura: pkgs/development/python-modules/trafilatura/default.nix)",
    ),
    ("writers", "pkgs/build-support/writers/default.nix (writePython3Bin)"),
    (
        "bashInteractive",
        "pkgs/top-level/all-packages.nix (bash.override { interactive = true; })",
    ),
    (
        "writeShellApplication",
        "pkgs/build-support/trivial-builders/default.nix",
    ),
    ("dockerTools", "pkgs/build-support/docker/default.nix"),
    ("testers", "pkgs/build-support/testers/default.nix"),
    ("runCommand", "pkgs/build-support/trivial-builders/default.nix"),
    ("mkShell", "pkgs/build-support/mkshell/default.nix"),
    ("stdenv", "pkgs/stdenv/generic/make-derivation.nix"),
    ("wireguard-tools", "pkgs/by-name/wi/wireguard-tools/package.nix"),
    ("coreutils", "pkgs/tools/misc/coreutils/default.nix"),
    (
        "docker-client",
        "pkgs/top-level/all-packages.nix (docker.override { clientOnly = true; })",
    ),
    ("nixfmt", "pkgs/by-name/ni/nixfmt/package.nix"),
    ("nix", "pkgs/tools/package-management/nix/default.nix"),
    ("cargo", "pkgs/development/compilers/rust/default.nix"),
    ("clippy", "pkgs/development/compilers/rust/default.nix"),
    ("rustfmt", "pkgs/development/compilers/rust/default.nix"),
    ("rustPlatform", "pkgs/development/compilers/rust/default.nix"),
    ("buildGoModule", "pkgs/build-support/go/module.nix"),
    ("fetchFromGitHub", "pkgs/build-support/fetchgithub/default.nix"),
    ("fetchurl", "pkgs/build-support/fetchurl/default.nix"),
    (
        "buildNpmPackage",
        "pkgs/build-support/node/build-npm-package/default.nix",
    ),
    ("importNpmLock", "pkgs/build-support/node/import-npm-lock/default.nix"),
    ("python313", "pkgs/development/interpreters/python/default.nix"),
    ("makeWrapper", "pkgs/build-support/setup-hooks/make-wrapper.sh"),
    ("autoPatchelfHook", "pkgs/build-support/setup-hooks/auto-patchelf.sh"),
    ("zlib", "pkgs/development/libraries/zlib/default.nix"),
    ("writeText", "pkgs/build-support/trivial-builders/default.nix"),
    ("nodejs_26", "pkgs/development/web/nodejs/v26.nix"),
    (
        "pypaInstallHook",
        "pkgs/development/interpreters/python/hooks/default.nix (python.pkgs.pypaInstallHook)",
    ),
];

fn catalog() -> Option<Value> {
    let beside = root().join("../shared/nixos-catalog.json");
    let path = if beside.is_file() {
        beside
    } else if let Some(path) = std::env::var_os("APPLIANCE_NIXOS_CATALOG") {
        PathBuf::from(path)
    } else {
        assert!(
            !in_ci(),
            "the NixOS catalog is required in CI: put shared/ beside the repository or set APPLIANCE_NIXOS_CATALOG"
        );
        eprintln!("\n!!! SKIPPED: no ../shared/nixos-catalog.json and no APPLIANCE_NIXOS_CATALOG !!!\n");
        return None;
    };
    Some(read_json(&path))
}

/// Nix source as tokens: identifiers, strings (their text, for quoted
/// attribute names) and punctuation. Comments and string interpolations
/// are dropped; this is enough to follow attribute paths, not to evaluate.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Punct(char),
    Other,
}

fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // Skips an interpolation `${ ... }` starting at `i` (at `$`).
    fn skip_interpolation(chars: &[char], mut i: usize) -> usize {
        let mut depth = 0;
        while i < chars.len() {
            match chars[i] {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    }
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            let mut text = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    text.push(chars[i + 1]);
                    i += 2;
                } else if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                    i = skip_interpolation(&chars, i);
                } else {
                    text.push(chars[i]);
                    i += 1;
                }
            }
            i += 1;
            tokens.push(Token::Str(text));
        } else if c == '\'' && chars.get(i + 1) == Some(&'\'') {
            i += 2;
            while i < chars.len() {
                if chars[i] == '\'' && chars.get(i + 1) == Some(&'\'') {
                    // `'''`, `''$` and `''\` are escapes inside the string.
                    if matches!(chars.get(i + 2), Some('\'' | '$' | '\\')) {
                        i += 3;
                        continue;
                    }
                    i += 2;
                    break;
                } else if chars[i] == '$' && chars.get(i + 1) == Some(&'{') {
                    i = skip_interpolation(&chars, i);
                } else {
                    i += 1;
                }
            }
            tokens.push(Token::Other);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '-' | '\'')) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if "{}[]();=.:,@?".contains(c) {
            tokens.push(Token::Punct(c));
            i += 1;
        } else if c == '$' && chars.get(i + 1) == Some(&'{') {
            i = skip_interpolation(&chars, i);
            tokens.push(Token::Other);
        } else {
            i += 1;
            tokens.push(Token::Other);
        }
    }
    tokens
}

/// Follows attribute paths through nested attribute sets and records each
/// path whose value is not itself an attribute set literal. A value counts
/// as nested when it is `{ ... }`, possibly behind `lib.mkIf <cond>`,
/// `lib.mkDefault`, `lib.mkForce` or a function pattern (`{ ... }: { ... }`).
struct PathCollector<'a> {
    tokens: &'a [Token],
    paths: BTreeSet<String>,
}

impl PathCollector<'_> {
    fn punct(&self, i: usize, c: char) -> bool {
        self.tokens.get(i) == Some(&Token::Punct(c))
    }

    /// Index after the bracket group opening at `i`.
    fn skip_group(&self, mut i: usize) -> usize {
        let mut depth = 0i32;
        while i < self.tokens.len() {
            match self.tokens[i] {
                Token::Punct('{' | '[' | '(') => depth += 1,
                Token::Punct('}' | ']' | ')') => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    }

    /// Index of the `;` ending the value that starts at `i`.
    fn value_end(&self, mut i: usize) -> usize {
        while i < self.tokens.len() && !self.punct(i, ';') {
            if matches!(self.tokens[i], Token::Punct('{' | '[' | '(')) {
                i = self.skip_group(i);
            } else {
                i += 1;
            }
        }
        i
    }

    /// Where the attribute set literal of a value starting at `i` opens,
    /// if the value is one.
    fn nested_start(&self, mut i: usize) -> Option<usize> {
        let ident = |i: usize| match self.tokens.get(i) {
            Some(Token::Ident(name)) => Some(name.as_str()),
            _ => None,
        };
        // lib.mkIf COND / lib.mkDefault / lib.mkForce
        if ident(i) == Some("lib") && self.punct(i + 1, '.') {
            match ident(i + 2) {
                Some("mkIf") => {
                    i += 3;
                    if self.punct(i, '(') {
                        i = self.skip_group(i);
                    } else {
                        // A condition like `cfg.enable`.
                        i += 1;
                        while self.punct(i, '.') && ident(i + 1).is_some() {
                            i += 2;
                        }
                    }
                }
                Some("mkDefault" | "mkForce") => i += 3,
                Some("mkOverride") => i += 4,
                _ => return None,
            }
        }
        if !self.punct(i, '{') {
            return None;
        }
        // A function pattern `{ a, b, ... }:` followed by its body.
        let after = self.skip_group(i);
        if self.punct(after, ':') {
            return self.punct(after + 1, '{').then_some(after + 1);
        }
        Some(i)
    }

    /// Reads the attribute set whose `{` is at `open`; returns the index
    /// after its `}`.
    fn attrset(&mut self, open: usize, prefix: &[String]) -> usize {
        let mut i = open + 1;
        while i < self.tokens.len() && !self.punct(i, '}') {
            if self.tokens[i] == Token::Ident("inherit".into()) {
                i = self.value_end(i) + 1;
                continue;
            }
            // An attribute path: names separated by dots, then `=`.
            let mut path = prefix.to_vec();
            let start = i;
            while let Token::Ident(name) | Token::Str(name) = &self.tokens[i] {
                path.push(name.clone());
                i += 1;
                if self.punct(i, '.') {
                    i += 1;
                } else {
                    break;
                }
            }
            if i == start || !self.punct(i, '=') {
                // Not a binding (e.g. a `let` body); skip one token.
                i = start + 1;
                continue;
            }
            i += 1;
            let end = self.value_end(i);
            match self.nested_start(i) {
                Some(open) if open < end => {
                    self.attrset(open, &path);
                    self.modules_in(open, end);
                }
                _ => {
                    self.paths.insert(path.join("."));
                    self.modules_in(i, end);
                }
            }
            i = end + 1;
        }
        i + 1
    }

    /// NixOS modules written inline in `modules = [ { ... } ... ]`.
    fn modules_in(&mut self, from: usize, to: usize) {
        let mut i = from;
        while i + 2 < to {
            if self.tokens[i] == Token::Ident("modules".into()) && self.punct(i + 1, '=') && self.punct(i + 2, '[') {
                let close = self.skip_group(i + 2);
                let mut j = i + 3;
                while j < close - 1 {
                    if self.punct(j, '{') {
                        j = self.attrset(j, &[]);
                    } else {
                        j += 1;
                    }
                }
                i = close;
            } else {
                i += 1;
            }
        }
    }
}

/// Attribute paths a Nix file defines: the module body after any function
/// headers and `let ... in` (or, for files that build modules inline, the
/// modules in `modules = [ ... ]` lists).
fn defined_paths(text: &str) -> BTreeSet<String> {
    let tokens = tokenize(text);
    let mut collector = PathCollector {
        tokens: &tokens,
        paths: BTreeSet::new(),
    };
    let mut i = 0;
    loop {
        // Function headers: `{ ... }:`, `{ ... }@args:` or `name:`.
        if collector.punct(i, '{') {
            let mut after = collector.skip_group(i);
            if collector.punct(after, '@') && matches!(tokens.get(after + 1), Some(Token::Ident(_))) {
                after += 2;
            }
            if collector.punct(after, ':') {
                i = after + 1;
                continue;
            }
        }
        if matches!(tokens.get(i), Some(Token::Ident(_))) && collector.punct(i + 1, ':') {
            i += 2;
            continue;
        }
        if tokens.get(i) == Some(&Token::Ident("let".into())) {
            let mut depth = 0;
            while i < tokens.len() {
                match &tokens[i] {
                    Token::Ident(word) if word == "let" => depth += 1,
                    Token::Ident(word) if word == "in" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        break;
    }
    // Skip a leading function application (`pkgs.testers.runNixOSTest {`).
    while matches!(tokens.get(i), Some(Token::Ident(_) | Token::Punct('.'))) {
        i += 1;
    }
    if collector.punct(i, '{') {
        collector.attrset(i, &[]);
    }
    collector.modules_in(0, tokens.len());
    collector.paths
}

/// NixOS option paths a file sets, by kind of file.
fn option_paths(file: &Path, text: &str) -> BTreeSet<String> {
    let relative = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
    defined_paths(text)
        .into_iter()
        .filter_map(|path| {
            if relative.ends_with("nix/checks/hub.nix") || relative.ends_with("nix/checks/hub-scenario.nix") {
                // Only the test node's configuration is a NixOS module.
                return path
                    .strip_prefix("nodes.machine.")
                    .filter(|p| *p != "imports")
                    .map(str::to_string);
            }
            if relative == "flake.nix" || relative.ends_with("nix/hosts.nix") {
                // Outputs are not options; inline modules are collected
                // without a prefix and start with an option namespace.
                let first = path.split('.').next().unwrap();
                return ["nixpkgs", "appliance"].contains(&first).then_some(path);
            }
            let path = path.strip_prefix("config.").map_or(path.clone(), str::to_string);
            (!path.starts_with("options.") && path != "imports").then_some(path)
        })
        .collect()
}

/// Whether `path` is `option`, with `<name>`/`*` matching any one segment.
fn matches_option(path: &[&str], option: &[&str]) -> bool {
    path.len() == option.len()
        && path
            .iter()
            .zip(option)
            .all(|(p, o)| p == o || *o == "<name>" || *o == "*")
}

/// Types whose values are free-form attribute sets: paths below such an
/// option are keys of its value, not options.
fn is_freeform(kind: &str) -> bool {
    [
        "freeformType",
        "attrsOf types.str",
        "unitOption",
        "configType",
        "formats.json",
        "formats.yaml",
    ]
    .iter()
    .any(|k| kind.contains(k))
}

fn module_files() -> Vec<PathBuf> {
    let mut files = generated_host_modules();
    files.push(root().join("modules/appliance.nix"));
    files.extend(nix_files(&root().join("nix/targets")));
    files.push(root().join("nix/checks/hub.nix"));
    files.push(root().join("nix/checks/hub-scenario.nix"));
    files.push(root().join("nix/checks/hub-node.nix"));
    files.push(root().join("nix/hosts.nix"));
    files.push(root().join("flake.nix"));
    files
}

#[test]
fn the_extractor_follows_modules_as_written() {
    let text = r#"
{ config, lib, ... }:
let x = { a = 1; }; in
{
  imports = [ ];
  options.appliance.enable = lib.mkEnableOption "x";
  config = lib.mkIf (config.appliance.enable && x.a == 1) {
    services.openssh = {
      enable = true;
      settings.PasswordAuthentication = false;
    };
    networking.firewall.interfaces.br-appliance = { allowedTCPPorts = [ 1 ]; };
    virtualisation.docker.daemon.settings = s // { runtimes = { }; };
    systemd.services.x.script = ''
      echo ${"{"} a = b; }
    '';
    "quoted.name" = lib.mkDefault "v";
  };
}
"#;
    let paths: Vec<String> = defined_paths(text).into_iter().collect();
    assert_eq!(
        paths,
        [
            "config.networking.firewall.interfaces.br-appliance.allowedTCPPorts".to_string(),
            "config.quoted.name".into(),
            "config.services.openssh.enable".into(),
            "config.services.openssh.settings.PasswordAuthentication".into(),
            "config.systemd.services.x.script".into(),
            "config.virtualisation.docker.daemon.settings".into(),
            "imports".into(),
            "options.appliance.enable".into(),
        ]
    );
}

/// The option paths the catalog (and OPTIONS_NOT_IN_CATALOG, and our own
/// module) declares, each with whether values below it are free-form; and
/// the renamed or removed ones.
struct KnownOptions {
    options: Vec<(Vec<String>, bool)>,
    removed: BTreeSet<String>,
}

impl KnownOptions {
    fn load(catalog: &Value) -> KnownOptions {
        let mut options: Vec<(Vec<String>, bool)> = catalog["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let path = o["path"].as_str().unwrap();
                let kind = o["type"].as_str().unwrap_or_default();
                (path.split('.').map(str::to_string).collect(), is_freeform(kind))
            })
            .collect();
        for (path, _file) in OPTIONS_NOT_IN_CATALOG {
            // RFC 42 `settings` options, unit sections and module arguments
            // are free-form: keys below are config.
            let freeform = path.ends_with(".settings")
                || path.ends_with(".pathConfig")
                || *path == "_module.args"
                || *path == "boot.kernel.sysctl";
            options.push((path.split('.').map(str::to_string).collect(), freeform));
        }
        // Our own options, as modules/appliance.nix declares them.
        let module = read(&root().join("modules/appliance.nix"));
        let declared: Vec<String> = defined_paths(&module)
            .into_iter()
            .filter_map(|p| p.strip_prefix("options.").map(str::to_string))
            .collect();
        assert_eq!(declared, ["appliance.enable", "appliance.host"]);
        for path in &declared {
            options.push((path.split('.').map(str::to_string).collect(), false));
        }
        let removed = catalog["renamed_or_removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["from"].as_str().unwrap().to_string())
            .collect();
        KnownOptions { options, removed }
    }

    /// Whether `path` is a declared option (or below a free-form one) and
    /// not renamed or removed. With `prefix`, a path that stops above an
    /// option also counts: a template's `{{ value }}` may be a whole set.
    fn accepts(&self, path: &str, prefix: bool) -> bool {
        let segments: Vec<&str> = path.split('.').collect();
        let ok = self.options.iter().any(|(option, freeform)| {
            let option: Vec<&str> = option.iter().map(String::as_str).collect();
            matches_option(&segments, &option)
                || (*freeform && segments.len() > option.len() && matches_option(&segments[..option.len()], &option))
                || (prefix && segments.len() < option.len() && matches_option(&segments, &option[..segments.len()]))
        });
        let renamed = self.removed.iter().any(|r| {
            let r: Vec<&str> = r.split('.').collect();
            segments.len() >= r.len() && matches_option(&segments[..r.len()], &r)
        });
        ok && !renamed
    }
}

#[test]
fn every_option_we_emit_is_in_the_nixos_catalog() {
    let Some(catalog) = catalog() else {
        return;
    };
    let known = KnownOptions::load(&catalog);
    let mut unknown = BTreeMap::new();
    let mut checked = 0;
    for file in module_files() {
        for path in option_paths(&file, &read(&file)) {
            checked += 1;
            if !known.accepts(&path, false) {
                unknown
                    .entry(path)
                    .or_insert_with(Vec::new)
                    .push(file.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    assert!(checked > 100, "the extractor found only {checked} option paths");
    assert!(
        unknown.is_empty(),
        "option paths that are not in ../shared/nixos-catalog.json (or are renamed/removed there); \
         fix the name, or add it to OPTIONS_NOT_IN_CATALOG with the nixpkgs file declaring it:\n{unknown:#?}"
    );
}

/// A minijinja template as Nix the path extractor can read, with every
/// branch kept: `{% ... %}` tags dropped (both sides of an `if`, one copy
/// of a loop body), `{{ x | attr }}` (an attribute name) as `NAME`, and
/// every other `{{ ... }}` as `null`.
fn template_as_nix(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (before, tag) = rest.split_at(open);
        out.push_str(before);
        let close = |end: &str| tag.find(end).map(|i| i + end.len()).unwrap_or(tag.len());
        if tag.starts_with("{{") {
            let end = close("}}");
            out.push_str(if tag[..end].contains("| attr") { "NAME" } else { "null" });
            rest = &tag[end..];
        } else if tag.starts_with("{%") {
            rest = &tag[close("%}")..];
        } else if tag.starts_with("{#") {
            rest = &tag[close("#}")..];
        } else {
            out.push('{');
            rest = &tag[1..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn every_option_path_the_templates_can_emit_is_in_the_nixos_catalog() {
    let Some(catalog) = catalog() else {
        return;
    };
    let known = KnownOptions::load(&catalog);
    let template = root().join("templates/host.nix.j2");
    let nix = template_as_nix(&read(&template));
    // Every branch, including those no committed spec takes (a sandbox on
    // the GPU, unpaired WireGuard peers), as literal paths.
    let paths = option_paths(&template, &nix);
    for branch in [
        "hardware.nvidia-container-toolkit.enable",
        "networking.wireguard.interfaces.NAME.generatePrivateKeyFile",
        "services.ollama.loadModels",
        "systemd.paths",
        "warnings",
    ] {
        assert!(
            paths.contains(branch),
            "the template extractor missed `{branch}`: {paths:#?}"
        );
    }
    let unknown: Vec<&String> = paths.iter().filter(|p| !known.accepts(p, true)).collect();
    assert!(
        unknown.is_empty(),
        "option paths in templates/host.nix.j2 that are not in ../shared/nixos-catalog.json \
         (or are renamed/removed there):\n{unknown:#?}"
    );
}

/// `pkgs.<attr>` references.
fn package_attrs(text: &str) -> BTreeSet<String> {
    let tokens = tokenize(text);
    tokens
        .windows(3)
        .filter_map(|w| match w {
            [Token::Ident(pkgs), Token::Punct('.'), Token::Ident(attr)] if pkgs == "pkgs" => Some(attr.clone()),
            _ => None,
        })
        .collect()
}

/// The arguments of a `callPackage`d file's `{ ... }:` header.
fn call_package_args(text: &str) -> BTreeSet<String> {
    let tokens = tokenize(text);
    let close = tokens.iter().position(|t| *t == Token::Punct('}')).unwrap();
    tokens[1..close]
        .iter()
        .filter_map(|t| match t {
            Token::Ident(name) => Some(name.clone()),
            _ => None,
        })
        // Our own arguments (nix/overlay.nix passes them) and default
        // values, not packages.
        .filter(|name| !["lib", "null"].contains(&name.as_str()) && !name.ends_with("ource"))
        .collect()
}

#[test]
fn every_package_we_use_is_in_the_nixos_catalog() {
    let Some(catalog) = catalog() else {
        return;
    };
    let mut known: BTreeSet<String> = catalog["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["exists"].as_bool() != Some(false))
        .map(|p| p["attr"].as_str().unwrap().to_string())
        .collect();
    let removed: BTreeSet<String> = catalog["renamed_or_removed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["from"].as_str()?.strip_prefix("pkgs.").map(str::to_string))
        .collect();
    known.extend(PACKAGES_NOT_IN_CATALOG.iter().map(|(attr, _)| attr.to_string()));

    let mut used = BTreeMap::new();
    let mut files = module_files();
    files.extend(generated_images());
    files.extend(hand_written_nix());
    for file in &files {
        let text = read(file);
        let mut attrs = package_attrs(&text);
        if file.parent().is_some_and(|p| p.ends_with("nix/packages")) {
            attrs.extend(call_package_args(&text));
        }
        for attr in attrs {
            used.entry(attr)
                .or_insert_with(BTreeSet::new)
                .insert(file.strip_prefix(root()).unwrap().display().to_string());
        }
    }
    assert!(used.len() > 20, "found only {} package attributes", used.len());
    let unknown: BTreeMap<_, _> = used
        .into_iter()
        .filter(|(attr, _)| !known.contains(attr) || removed.contains(attr))
        .collect();
    assert!(
        unknown.is_empty(),
        "package attributes not in ../shared/nixos-catalog.json (or removed there); fix the name, \
         or add it to PACKAGES_NOT_IN_CATALOG with the nixpkgs file defining it:\n{unknown:#?}"
    );
}

// ---------------------------------------------------------------------------
// Upstream artifacts: every one pinned by a real hash, or nixpkgs' own.

/// Hashes that are syntactically SRI but pin nothing: nixpkgs' `lib.fakeHash`
/// / `lib.fakeSha256` / `lib.fakeSha512` (all `A`s) and the hash of empty
/// content, a common stand-in.
const KNOWN_FAKE_DIGESTS: &[&str] = &[
    "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
];

fn is_sri(hash: &str) -> bool {
    let (algorithm, digest) = hash.split_once('-').unwrap_or_default();
    let length = match algorithm {
        "sha256" => 44,
        "sha512" => 88,
        _ => return false,
    };
    digest.len() == length
        && digest.ends_with('=')
        && digest.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
        // lib.fakeHash and friends are all A's.
        && !digest.trim_end_matches('=').chars().all(|c| c == 'A')
        && !KNOWN_FAKE_DIGESTS.contains(&digest)
}

/// Every `sha256-...`/`sha512-...` string of at least 40 digest characters
/// in `text` (shorter ones are names such as `js-sha256-1.0`).
fn sri_strings(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for prefix in ["sha256-", "sha512-"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let after = &rest[at + prefix.len()..];
            let digest: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "+/=".contains(*c))
                .collect();
            if digest.len() >= 40 {
                found.push(format!("{prefix}{digest}"));
            }
            rest = after;
        }
    }
    found
}

/// Every file git tracks (or, outside a checkout, every file but build
/// output), as text; binary files are skipped.
fn tracked_text_files() -> Vec<(PathBuf, String)> {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty());
    let paths: Vec<PathBuf> = match listed {
        Some(output) => String::from_utf8_lossy(&output.stdout)
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(|p| root().join(p))
            .collect(),
        None => {
            let mut files = nix_files(&root());
            files.extend(
                ["flake.lock", "nix/sources.json", "nix/locks/openclaw/package-lock.json"]
                    .iter()
                    .map(|f| root().join(f)),
            );
            files
        }
    };
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|text| (p, text)))
        .collect()
}

#[test]
fn every_hash_in_the_repository_is_real_sri_and_no_placeholder() {
    // The detector itself: fakes are found and rejected, real ones pass.
    let fake = format!(
        "hash = \"sha256-{}=\"; sha512-{}",
        "A".repeat(43),
        KNOWN_FAKE_DIGESTS[1]
    );
    let found = sri_strings(&fake);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|h| !is_sri(h)));
    assert!(!is_sri(&format!("sha256-{}", KNOWN_FAKE_DIGESTS[0])));
    assert!(is_sri("sha256-oMees7EKANS5dkMHIqAHfGcumrNMtTEEA+dmpl8/dLE="));
    assert!(sri_strings("js-sha256-1.0.0").is_empty());

    let files = tracked_text_files();
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut checked = 0;
    let mut bad = Vec::new();
    for (path, text) in &files {
        let relative = path.strip_prefix(root()).unwrap_or(path).display().to_string();
        // This file spells the fake digests out to reject them.
        if relative == "tests/flake.rs" {
            continue;
        }
        for hash in sri_strings(text) {
            checked += 1;
            if !is_sri(&hash) {
                bad.push(format!("{relative}: `{hash}`"));
            }
        }
    }
    assert!(checked > 400, "found only {checked} hashes");
    assert!(
        bad.is_empty(),
        "not a real SRI hash, or a placeholder:\n{}",
        bad.join("\n")
    );
}

/// Attributes that hold a hash in Nix (fetchers, builders).
const HASH_ATTRIBUTES: &[&str] = &[
    "hash",
    "sha256",
    "sha512",
    "vendorHash",
    "cargoHash",
    "npmDepsHash",
    "outputHash",
    "narHash",
];

#[test]
fn every_hash_in_our_nix_is_pinned_in_sources_or_comes_from_nixpkgs() {
    let mut files = hand_written_nix();
    files.extend(nix_files(&root().join("images")));
    files.extend(generated_images());
    files.extend(generated_host_modules());
    let mut bad = Vec::new();
    for file in files {
        let tokens = tokenize(&read(&file));
        for window in tokens.windows(4) {
            let [Token::Ident(name), Token::Punct('='), value, _] = window else {
                continue;
            };
            // `a.hash == b.hash` is a comparison, not a binding.
            if *value == Token::Punct('=') {
                continue;
            }
            if !HASH_ATTRIBUTES.contains(&name.as_str()) {
                continue;
            }
            // A literal must be real; anything else is a reference into
            // nix/sources.json or the lock files (checked below), never null,
            // empty or one of nixpkgs' fake hashes.
            let ok = match value {
                Token::Str(literal) => is_sri(literal),
                Token::Ident(word) => !["null", "lib", "fakeHash", "fakeSha256"].contains(&word.as_str()),
                _ => false,
            };
            if !ok {
                bad.push(format!(
                    "{}: `{name} = {value:?}`",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
        let text = read(&file);
        for fake in ["lib.fakeHash", "lib.fakeSha256", "lib.fakeSha512"] {
            if text.contains(fake) {
                bad.push(format!("{}: uses `{fake}`", file.display()));
            }
        }
    }
    assert!(bad.is_empty(), "hash attributes that pin nothing:\n{}", bad.join("\n"));

    // Packages nixpkgs pins itself are named as such and pin nothing here.
    let sources = read_json(&root().join("nix/sources.json"));
    for (name, source) in sources.as_object().unwrap().iter().filter(|(k, _)| !k.starts_with('_')) {
        if source["from"] == "nixpkgs" {
            let fields: Vec<&String> = source.as_object().unwrap().keys().collect();
            assert!(
                fields.iter().all(|f| !f.to_lowercase().ends_with("hash")),
                "`{name}` comes from nixpkgs but pins hashes: {fields:?}"
            );
            let overlay = read(&root().join("nix/overlay.nix"));
            assert!(overlay.contains(&format!("sources.{name}")), "`{name}` is unused");
        }
    }
}

#[test]
fn every_upstream_artifact_is_pinned_and_says_how_to_recompute_it() {
    let sources = read_json(&root().join("nix/sources.json"));
    for (name, source) in sources.as_object().unwrap().iter().filter(|(k, _)| !k.starts_with('_')) {
        assert!(source["version"].is_string(), "`{name}` has no version");
        assert!(
            source["prefetch"].as_str().is_some_and(|p| !p.is_empty()),
            "`{name}` does not say how its pins are recomputed (`prefetch`)"
        );
        for (field, value) in source.as_object().unwrap() {
            let is_hash_field = field == "rev" || field.to_lowercase().ends_with("hash");
            if !is_hash_field {
                continue;
            }
            match value {
                Value::Null => {
                    panic!("`{name}.{field}` is null: every hash is pinned (or the package comes from nixpkgs)")
                }
                Value::String(hash) if field == "rev" => {
                    assert!(hash.len() == 40, "`{name}.rev` is not a commit id")
                }
                Value::String(hash) => assert!(is_sri(hash), "`{name}.{field}` = `{hash}` is not a real SRI hash"),
                other => panic!("`{name}.{field}` = {other}"),
            }
        }
    }

    // The OpenClaw lock pins every fetched npm package by integrity, and
    // its two top-level packages are the ones sources.json names.
    let lock = read_json(&root().join("nix/locks/openclaw/package-lock.json"));
    let packages = lock["packages"].as_object().unwrap();
    for (key, package) in packages.iter().filter(|(key, _)| !key.is_empty()) {
        if package.get("inBundle").is_some() || package.get("link").is_some() {
            continue;
        }
        assert!(
            package["resolved"]
                .as_str()
                .is_some_and(|r| r.starts_with("https://registry.npmjs.org/")),
            "`{key}` is not fetched from the npm registry"
        );
        assert!(
            package["integrity"].as_str().is_some_and(is_sri),
            "`{key}` has no integrity hash"
        );
    }
    let openclaw = &sources["openclaw"];
    assert_eq!(packages["node_modules/openclaw"]["version"], openclaw["version"]);
    assert_eq!(packages["node_modules/openclaw"]["integrity"], openclaw["hash"]);
    assert_eq!(
        packages["node_modules/@openclaw/matrix"]["version"],
        openclaw["matrixVersion"]
    );
    assert_eq!(
        packages["node_modules/@openclaw/matrix"]["integrity"],
        openclaw["matrixHash"]
    );

    // The Hermes lock: every wheel from PyPI with a sha256; the release
    // wheel is the one sources.json names.
    let wheels = read_json(&root().join("nix/locks/hermes-x86_64-linux.json"));
    let mut release = None;
    for wheel in wheels["wheels"].as_array().unwrap() {
        let url = wheel["url"].as_str().unwrap();
        assert!(
            url.starts_with("https://files.pythonhosted.org/") && url.ends_with(".whl"),
            "{url}"
        );
        assert!(
            wheel["hash"]
                .as_str()
                .is_some_and(|h| h.starts_with("sha256-") && is_sri(h))
        );
        if wheel["name"] == "hermes-agent" {
            release = Some(wheel);
        }
    }
    let release = release.expect("hermes-agent itself is in the wheel lock");
    assert_eq!(release["version"], sources["hermes-agent"]["version"]);
    assert_eq!(release["hash"], sources["hermes-agent"]["hash"]);
}

// ---------------------------------------------------------------------------
// No secret in the store.

#[test]
fn no_secret_is_written_into_any_nix_file() {
    let mut files = module_files();
    files.extend(generated_images());
    for file in files {
        let paths = defined_paths(&read(&file));
        for path in paths {
            let last = path.rsplit('.').next().unwrap().to_lowercase();
            assert!(
                ![
                    "privatekey",
                    "password",
                    "registration_shared_secret",
                    "macaroon_secret_key",
                    "presharedkey"
                ]
                .contains(&last.as_str()),
                "`{}` sets `{path}`: secrets are made on the host at first boot, never in the store",
                file.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Nix's own flake machinery (Nix 2.8 here): the lock is readable and the
// flake evaluates with nixpkgs overridden by the stub.

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// What the flake reads to evaluate, copied out of the checkout: Nix then
/// sees exactly these files, whether or not the checkout is a git tree,
/// and never copies `target/`.
fn flake_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["flake.nix", "flake.lock", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root().join(file), dir.path().join(file)).unwrap();
    }
    for tree in ["generated", "images", "modules", "nix"] {
        copy_tree(&root().join(tree), &dir.path().join(tree));
    }
    dir
}

/// Runs `nix` with flakes enabled and a throwaway store, in `dir`.
fn run_nix_flake(dir: &Path, args: &[&str]) -> Option<(bool, String, String)> {
    let nix = require_tool(
        "nix",
        "Debian package `nix-bin`: evaluates the flake with Nix's flake machinery",
    )?;
    let store = tempfile::tempdir().unwrap();
    let output = Command::new(nix)
        .args(["--extra-experimental-features", "nix-command flakes", "--store"])
        .arg(store.path().join("store"))
        .args(args)
        .current_dir(dir)
        .env("HOME", store.path())
        .env("XDG_CACHE_HOME", store.path().join("cache"))
        .output()
        .unwrap();
    Some((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn nix_reads_the_lock_and_evaluates_the_flake() {
    let flake = flake_copy();
    let Some((ok, stdout, stderr)) = run_nix_flake(flake.path(), &["flake", "metadata", "--offline", "--json", "."])
    else {
        return;
    };
    assert!(ok, "{stderr}");
    let metadata: Value = serde_json::from_str(&stdout).unwrap();
    let locked = &metadata["locks"]["nodes"]["nixpkgs"]["locked"];
    assert_eq!(locked["rev"], "21a67dc470149f337cecafbe965d8d252a390518");

    let stub = tempfile::tempdir().unwrap();
    std::fs::write(
        stub.path().join("flake.nix"),
        "{ outputs = { self }: { lib = import ./lib.nix; }; }",
    )
    .unwrap();
    std::fs::write(stub.path().join("lib.nix"), STUB_LIB).unwrap();
    std::fs::write(stub.path().join("default.nix"), STUB_PKGS).unwrap();
    let stub_input = format!("path:{}", stub.path().display());
    let (ok, stdout, stderr) = run_nix_flake(
        flake.path(),
        &[
            "eval",
            "--json",
            "--no-write-lock-file",
            "--override-input",
            "nixpkgs",
            &stub_input,
            ".#packages",
            "--apply",
            "builtins.mapAttrs (_: builtins.attrNames)",
        ],
    )
    .unwrap();
    assert!(ok, "{stderr}");
    let packages: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        packages["x86_64-linux"],
        serde_json::json!([
            "appliance",
            "default",
            "gce-image",
            "gce-image-hub",
            "rpi4-cross",
            "rpi4-cross-pi"
        ])
    );
}

/// coreutils programs an entry-point script may call.
const COREUTILS: &[&str] = &[
    "cat", "chmod", "chown", "cp", "date", "head", "id", "ln", "ls", "mkdir", "mv", "rm", "seq", "sleep", "tail",
    "touch",
];

/// Where a shell line calls a program: its first word, a word after `|`,
/// `;`, `&&`, `||`, `!`, `then`, `do` or `else`, and the first word of a
/// `$(...)`.
fn commands_called(line: &str) -> BTreeSet<String> {
    let mut called = BTreeSet::new();
    let mut after_separator = true;
    for word in line.split_whitespace() {
        let keyword = matches!(
            word,
            "if" | "then" | "else" | "fi" | "for" | "while" | "do" | "done" | "!"
        );
        if after_separator && !keyword {
            called.insert(word.trim_end_matches(';').to_string());
        }
        for substitution in word.split("$(").skip(1) {
            let program = substitution.split([')', '"']).next().unwrap_or("");
            if !program.is_empty() {
                called.insert(program.to_string());
            }
        }
        // After `for` comes a variable name, not a program.
        after_separator = (keyword && word != "for") || matches!(word, "|" | "||" | "&&") || word.ends_with(';');
    }
    called
}

/// An image carries only its packages, and writeShellApplication puts only
/// its `runtimeInputs` on PATH: an entry-point script that calls `rm` or
/// `id` fails in the Nix image unless its package lists coreutils (the
/// Hermes entry point once did not; the rehearsal's Debian image has them,
/// so only this catches it).
#[test]
fn entry_point_scripts_have_the_programs_they_call() {
    let packages = root().join("nix/packages");
    let mut checked = 0;
    for entry in std::fs::read_dir(&packages).unwrap() {
        let path = entry.unwrap().path();
        let nix = std::fs::read_to_string(&path).unwrap_or_default();
        if path.extension().is_none_or(|e| e != "nix") || !nix.contains("writeShellApplication {") {
            continue;
        }
        let script = match nix.split("builtins.readFile ./").nth(1) {
            Some(rest) => std::fs::read_to_string(packages.join(rest.split(';').next().unwrap())).unwrap(),
            None => nix.split("text = ''").nth(1).unwrap_or_default().to_string(),
        };
        let inputs = nix
            .split("runtimeInputs = [")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .unwrap_or("");
        let mut in_heredoc: Option<String> = None;
        for line in script.lines() {
            if let Some(end) = &in_heredoc {
                if line.trim() == end {
                    in_heredoc = None;
                }
                continue;
            }
            if line.trim_start().starts_with('#') {
                continue;
            }
            if let Some(marker) = line.split("<<'").nth(1) {
                in_heredoc = Some(marker.split('\'').next().unwrap().to_string());
            }
            for command in commands_called(line) {
                if COREUTILS.contains(&command.as_str()) {
                    assert!(
                        inputs.split_whitespace().any(|i| i == "coreutils"),
                        "{} calls `{command}` (`{}`) but its runtimeInputs lack coreutils: [{inputs}]",
                        path.display(),
                        line.trim()
                    );
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "found only {checked} entry-point scripts in nix/packages");
}

#[test]
fn commands_called_finds_programs_where_a_shell_calls_them() {
    let called = |line: &str| commands_called(line).into_iter().collect::<Vec<_>>();
    assert_eq!(called(r#"rm -f "$HOME/x""#), ["rm"]);
    assert_eq!(called(r#"rm -rf "$dir/tmp/openclaw-$(id -u)""#), ["id", "rm"]);
    assert_eq!(called("  for _ in $(seq 1 150); do"), ["seq"]);
    assert_eq!(
        called(r#"if [ -f "$state" ] && ! node -e "$release"; then"#),
        ["[", "node"]
    );
    assert_eq!(called("docker info && sleep 1"), ["docker", "sleep"]);
    assert_eq!(called(r#"echo "remove it" >&2"#), ["echo"]);
}
