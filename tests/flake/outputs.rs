//! The flake's outputs, the image functions and the hosts' generated values
//! (through nix/generated.nix and modules/), evaluated with stub inputs.

#[allow(unused_imports)]
use super::*;

/// A stand-in for nixpkgs: just the `lib` functions flake.nix and
/// nix/hosts.nix call, a `nixosSystem` that returns its arguments, and a
/// package set whose packages are labels. Evaluating the flake's outputs
/// against it proves their names and wiring; what nixpkgs does with them is
/// left to `nix flake check` on a machine with Nix >= 2.18.
pub(super) const STUB_LIB: &str = r#"
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

pub(super) const STUB_PKGS: &str = r#"
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
    assert_eq!(strings(&out["packages"]["x86_64-linux"]), X86_64_PACKAGES);
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
        ["generated-up-to-date", "hub-boots", "hub-scenario", "hub-upgrade"]
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
    // One configuration per host of generated/appliance.json, with its
    // target's profile and system, selecting its host's generated values.
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
    let bindings = r#"
  inherit (stub) lib;
  imagesWith = pkgs: import (root + "/images") { inherit pkgs lib; };
  generated = pkgs: name: (imagesWith pkgs).fromGenerated (root + "/generated/images/${name}.json");"#;
    crate::support::with_stub(STUB_IMAGE_PKGS, bindings, body)
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

/// The flake's packages on x86_64: the Pi's image only cross-compiled.
pub(super) const X86_64_PACKAGES: [&str; 6] = [
    "appliance",
    "default",
    "gce-image",
    "gce-image-hub",
    "rpi4-cross",
    "rpi4-cross-pi",
];

/// The arguments a host's module of the loader (nix/generated.nix) is
/// called with, less `config.appliance.{enable,host}`, which each caller
/// adds: the module reads those and `lib.mkIf`, whose stub keeps its
/// condition (so both sides can be asserted). The tests pass `pkgs` (no
/// package they evaluate) and `applianceImages` on to modules of modules/;
/// the images' `fromGenerated` returns which builder a generated
/// description names, and some of its arguments.
pub(super) const STUB_HOST_ARGS: &str = r#"
{
  lib.mkIf = condition: content: { _if = condition; inherit content; };
  pkgs = { };
  applianceImages.fromGenerated = file:
    let description = builtins.fromJSON (builtins.readFile file);
    in { inherit (description) image tag writable; };
}
"#;

#[test]
fn each_hosts_generated_values_evaluate_through_its_modules() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let stub = super::modules::host_stub();
    let expression = format!(
        r#"
let
  host = name:
    let
      args = import {stub}/args.nix;
      module = (import {root}/nix/generated.nix {root}/generated).hosts.${{name}}.module (args // {{ config.appliance = {{ enable = true; host = name; }}; }});
    in module.config.content;
  pi = host "pi";
  hub = host "hub";
  # A host's sandboxes as modules/sandboxes.nix makes them from its values.
  sandboxes = name: (import {root}/modules/sandboxes.nix {{
    lib = import {stub}/module-lib.nix;
    inherit (import {stub}/args.nix) pkgs applianceImages;
    # The options' defaults, which the stub lib leaves to the caller.
    config.appliance.sandboxes = builtins.mapAttrs (_: sandbox: {{
      wants = [ ]; waitFor = null; volumes = [ ]; files = {{ }}; environment = {{ }}; environmentFiles = [ ];
      ports = [ ]; cmd = [ ]; dependsOn = [ ];
    }} // sandbox)
      (host name).appliance.sandboxes;
  }}).config.content;
  # A host's overlay as modules/wireguard.nix makes it from the host's values.
  overlay = name: useNetworkd: (import {root}/modules/wireguard.nix {{
    lib = import {stub}/module-lib.nix;
    pkgs = {{ wireguard-tools.name = "wireguard-tools"; coreutils.name = "coreutils"; }};
    config = {{
      appliance = {{ host = name; wireguard = (host name).appliance.wireguard; }};
      networking.wireguard = {{ inherit useNetworkd; }};
    }};
  }}).config.content;
in {{
  scripted = {{
    generate = (overlay "pi" false).networking.wireguard.interfaces.wg-appliance.generatePrivateKeyFile;
    ownKeyUnit = (overlay "pi" false).systemd.services.appliance-wireguard-key._if;
  }};
  networkd = {{
    generate = (overlay "pi" true).networking.wireguard.interfaces.wg-appliance.generatePrivateKeyFile;
    ownKeyUnit = (overlay "pi" true).systemd.services.appliance-wireguard-key._if;
    before = (overlay "pi" true).systemd.services.appliance-wireguard-key.content.before;
  }};
  wireguard = {{ hub = hub.appliance.wireguard; pi = pi.appliance.wireguard; }};
  warnings = {{ hub = (overlay "hub" false).warnings; pi = (overlay "pi" false).warnings; }};
  # The generated values set options of modules/ only.
  onlyValues = {{ hub = builtins.attrNames hub; pi = builtins.attrNames pi; }};
  piSandbox = {{
    inherit ((sandboxes "pi").systemd.services.docker-balthasar-pi) after requires wants unitConfig;
    path = (sandboxes "pi").systemd.paths.docker-balthasar-pi.pathConfig;
    image = (sandboxes "pi").virtualisation.oci-containers.containers.balthasar-pi.imageStream;
  }};
  synapse = hub.appliance.synapse;
  # The hub's Synapse unit as modules/synapse.nix makes it from those values.
  synapseUnit = (import {root}/modules/synapse.nix {{
    lib = import {stub}/module-lib.nix;
    config.appliance.synapse = hub.appliance.synapse;
  }}).config.content.systemd.services.matrix-synapse;
  ollama = {{ inherit ((sandboxes "hub").systemd.services.docker-ollama) after requires; }};
  nonlocalBind = {{
    hub = (overlay "hub" false).boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind";
    pi = (overlay "pi" false).boot.kernel.sysctl."net.ipv4.ip_nonlocal_bind";
  }};
  nvidia = hub.appliance.nvidia;
  piNvidia = pi.appliance ? nvidia;
  bootstrap = hub.appliance.bootstrap;
  warden = hub.appliance ? warden;
  piWarden = pi.appliance ? warden;
  egress = {{
    inherit (hub.appliance.egress) enable resolver;
    proxy = hub.appliance.egress ? proxyConfig;
    tables = builtins.baseNameOf hub.appliance.egress.inetTable;
  }};
  docker = {{ hub = hub.appliance.docker; pi = pi.appliance.docker; }};
  # The hub's bridge as modules/docker-gvisor.nix makes it from the hub's values.
  network = (import {root}/modules/docker-gvisor.nix {{
    lib = import {stub}/module-lib.nix;
    pkgs.gvisor.name = "gvisor";
    config = {{
      appliance.docker = hub.appliance.docker;
      virtualisation.docker.package.name = "docker";
    }};
  }}).config.content.systemd.services.appliance-network.script;
  models = hub.appliance.models;
  piModels = pi ? appliance.models;
  ready = {{ hub = hub.appliance.ready.units; pi = pi.appliance.ready.units; }};
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
    // The generated values hold the overlay's values only
    // (modules/wireguard.nix): the interface, each host's address, the key
    // made on the host, no peer and a warning each while neither host has
    // the other's public key (the committed spec is unpaired).
    assert_eq!(
        out["onlyValues"],
        serde_json::json!({ "hub": ["appliance"], "pi": ["appliance"] })
    );
    for (name, address, other) in [("hub", "10.89.0.1/24", "pi"), ("pi", "10.89.0.2/24", "hub")] {
        assert_eq!(
            out["wireguard"][name],
            serde_json::json!({
                "enable": true,
                "interface": "wg-appliance",
                "address": address,
                "port": 51820,
                "keyFile": "/var/lib/appliance/wireguard/private.key",
                "peers": [],
                "unpaired": [other],
                "nonlocalBind": name == "hub",
            })
        );
        assert_eq!(
            out["warnings"][name],
            serde_json::json!([format!(
                "appliance host `{name}`: host `{other}` has no `wireguard-public-key` in appliance.toml, \
                 so the link to it is down; pair them (docs/pairing.md)."
            )])
        );
    }
    let device = "sys-subsystem-net-devices-wg\\x2dappliance.device";
    let pi = &out["piSandbox"];
    // It mounts the appliance CA's certificate (its GitHub token is added
    // by the Pi's proxy), so it waits for the CA too.
    assert_eq!(
        pi["after"],
        serde_json::json!([
            "appliance-network.service",
            "appliance-egress-ca.service",
            "network-online.target",
            device,
            "wireguard-wg-appliance.service"
        ])
    );
    assert_eq!(
        pi["requires"],
        serde_json::json!(["appliance-network.service", "appliance-egress-ca.service", device])
    );
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
    assert_eq!(out["synapse"]["wants"], serde_json::json!(["network-online.target"]));
    for key in ["after", "requires", "wants"] {
        assert_eq!(out["synapseUnit"][key], out["synapse"][key], "{key}");
    }
    // Without federation the unit talks with loopback, the bridge and the
    // overlay only (render::synapse::allowed_addresses), on PostgreSQL.
    assert_eq!(
        out["synapseUnit"]["serviceConfig"]["content"],
        serde_json::json!({ "IPAddressDeny": "any", "IPAddressAllow": ["localhost", "10.88.0.0/16", "10.89.0.0/24"] })
    );
    assert_eq!(out["synapse"]["enable"], true);
    assert!(
        out["synapse"]["settingsFile"]
            .as_str()
            .unwrap()
            .ends_with("-synapse.json")
    );
    assert_eq!(
        out["synapse"]["postgresql"],
        serde_json::json!({ "enable": true, "name": "matrix-synapse" })
    );
    assert_eq!(
        out["nonlocalBind"],
        serde_json::json!({ "hub": { "_if": true, "content": 1 }, "pi": { "_if": false } })
    );
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
    // The GPU host's driver (modules/nvidia.nix, whose default is
    // nvproxy's list); Ollama's sandbox uses the GPUs through CDI. The Pi
    // has no GPU.
    assert_eq!(
        out["nvidia"],
        serde_json::json!({
            "enable": true,
            "package": agent_appliance::generator::render::NVIDIA_PACKAGE,
            "containerToolkit": true,
        })
    );
    assert_eq!(out["piNvidia"], false);
    // The Matrix host's bootstrap (modules/bootstrap.nix) runs the
    // generated plan, copied to the store; the warden (modules/warden.nix)
    // runs wherever the bootstrap does and reads the same plan (its
    // options' defaults, tests/flake/modules.rs), so no host sets it; a
    // host without Synapse has nothing for either.
    assert_eq!(out["bootstrap"]["enable"], true);
    let plan = out["bootstrap"]["plan"].as_str().unwrap();
    assert!(plan.starts_with('/') && plan.ends_with("-plan.json"), "{plan}");
    assert_eq!(out["warden"], false);
    assert_eq!(out["piWarden"], false);
    // The hub's egress is values for modules/egress.nix: its own tables,
    // its proxy and its resolver on the bridge.
    assert_eq!(
        out["egress"],
        serde_json::json!({ "enable": true, "resolver": "10.88.0.1", "proxy": true, "tables": "firewall-inet.nft" })
    );
    // Docker with the generated runtimes and the sandboxes' bridge
    // (modules/docker-gvisor.nix) on every host, as Rust decides it; the
    // hub, on GCE, with GCE's MTU.
    let appliance = agent_appliance::operator::commands::load(&root().join("appliance.toml")).unwrap();
    for name in ["hub", "pi"] {
        let docker = &out["docker"][name];
        assert_eq!(docker["enable"], true);
        let settings = docker["daemonSettings"].as_str().unwrap();
        assert!(settings.ends_with("-docker-daemon.json"), "{settings}");
        let network = agent_appliance::generator::render::docker_network(&appliance, &appliance.hosts[name]);
        assert_eq!(docker["network"], serde_json::to_value(network).unwrap());
        // The minimum gVisor is the option's default, the same on every host.
        assert_eq!(docker.get("runscMinimum"), None);
    }
    assert_eq!(out["docker"]["hub"]["network"]["mtu"], 1460);
    assert!(
        out["network"]
            .as_str()
            .unwrap()
            .contains("'--opt=com.docker.network.driver.mtu=1460'")
    );
    // The hub pulls its models into Ollama's sandbox with the generated
    // script (modules/models.nix, which adds its unit to readiness); the
    // ready target waits for every sandbox of each host.
    let models = &out["models"];
    assert_eq!(models["enable"], true);
    assert_eq!(models["sandboxUnit"], "docker-ollama.service");
    assert_eq!(models["url"], "http://10.88.0.2:11434");
    assert_eq!(
        models["names"],
        serde_json::json!(["gemma4:26b-a4b-it-q8_0", "glm-4.7-flash:q4_K_M", "qwen3.5:27b-q4_K_M"])
    );
    assert_eq!(out["piModels"], false);
    assert_eq!(
        out["ready"],
        serde_json::json!({
            "hub": [
                "docker-ollama.service",
                "docker-searxng.service",
                "docker-webextract.service",
                "docker-balthasar.service",
                "docker-casper.service",
                "docker-casper-exec.service",
                "docker-melchior.service"
            ],
            "pi": ["docker-balthasar-pi.service"]
        })
    );
}

#[test]
fn every_image_function_is_the_image_src_model_describes() {
    use agent_appliance::generator::model::image::{self, VersionCheck};
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
fn the_overlay_provides_every_appliance_package_the_images_use() {
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
    files.extend(nix_files(&root().join("images")));
    for file in files {
        for attr in packages_of(&file) {
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

#[test]
fn the_clis_package_source_names_only_paths_that_exist() {
    // `lib.fileset.unions` fails evaluation on a missing path, so a path
    // the repository drops (templates/ went with the Jinja templates) must
    // leave nix/packages/appliance.nix too, or `nix build .#appliance` and
    // every image and machine that runs the CLI stop evaluating.
    let text = read(&root().join("nix/packages/appliance.nix"));
    let start = text
        .find("lib.fileset.unions [")
        .expect("the package names its source files");
    let end = start + text[start..].find(']').unwrap();
    let paths: Vec<&str> = text[start..end]
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("../../"))
        .collect();
    assert!(paths.len() >= 5, "{paths:?}");
    for path in &paths {
        let relative = path.trim_start_matches("../../");
        assert!(
            root().join(relative).exists(),
            "nix/packages/appliance.nix names `{path}`, which does not exist"
        );
    }
    // What build.rs and the embedded files read is in it.
    for needed in ["../../build.rs", "../../nix/sources.json", "../../src"] {
        assert!(paths.contains(&needed), "the CLI's source lacks `{needed}`: {paths:?}");
    }
}

#[test]
fn the_gce_image_job_builds_the_spec_gpus_cuda_with_named_caches() {
    // Issue 20, 7(e): a 4-vCPU runner cannot compile CUDA for every
    // architecture. The flake passes the spec's capability (checked above:
    // the hub's L4, 8.9); the job pulls CUDA's redistributables from the CUDA
    // maintainers' cache and names the project's own for what it builds.
    let workflow = read(&root().join(".github/workflows/nix.yml"));
    // The job: its key's line and every line after it until the next job's
    // key (indented two spaces, as `gce-image:` is).
    let job: String = workflow
        .lines()
        .skip_while(|line| *line != "  gce-image:")
        .enumerate()
        .take_while(|(i, line)| *i == 0 || !(line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':')))
        .map(|(_, line)| format!("{line}\n"))
        .collect();
    assert!(!job.is_empty(), "the workflow has the gce-image job");
    for needed in [
        "extra-substituters = https://cuda-maintainers.cachix.org",
        "extra-trusted-public-keys = cuda-maintainers.cachix.org-1:",
        "uses: cachix/cachix-action@",
        "name: agent-appliance",
        "nix build -L .#gce-image",
    ] {
        assert!(job.contains(needed), "the gce-image job lacks `{needed}`:\n{job}");
    }
}
