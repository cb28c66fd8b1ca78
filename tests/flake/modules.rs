//! The hand-written NixOS modules of modules/, evaluated with a stub `lib`:
//! the options they declare, and the units they make from them.

#[allow(unused_imports)]
use super::*;

/// Just the `lib` the hand-written modules call: options are returned as
/// written (so their declarations can be inspected), `mkIf` keeps its
/// condition.
const STUB_MODULE_LIB: &str = r#"
{
  mkEnableOption = description: { _enable = description; };
  mkPackageOption = _pkgs: name: _extra: { _package = name; };
  mkOption = option: option;
  types = { path = "path"; str = "str"; listOf = type: "listOf ${type}"; };
  mkIf = condition: content: { _if = condition; inherit content; };
  getExe = pkg: "${pkg.name}/bin/${pkg.name}";
}
"#;

fn eval_module(file: &str, config: &str, select: &str) -> Value {
    let stub = tempfile::tempdir().unwrap();
    std::fs::write(stub.path().join("lib.nix"), STUB_MODULE_LIB).unwrap();
    eval_json(&format!(
        r#"
let
  module = import {root}/{file} {{
    lib = import {stub}/lib.nix;
    pkgs = {{ }};
    utils.escapeSystemdExecArgs = args: builtins.concatStringsSep " " args;
    config = {config};
  }};
in {select}
"#,
        root = root().display(),
        stub = stub.path().display(),
    ))
}

#[test]
fn the_warden_module_runs_the_warden_after_bootstrap_and_restarts_it() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let config = r#"{ appliance.warden = {
      enable = true; package = { name = "appliance"; };
      plan = "/nix/store/0000-plan.json"; extraArgs = [ "--homeserver" "http://127.0.0.1:8008" ];
    }; virtualisation.docker.package = { name = "docker"; }; }"#;
    let out = eval_module(
        "modules/warden.nix",
        config,
        r#"{
          options = builtins.attrNames module.options.appliance.warden;
          package = module.options.appliance.warden.package;
          enabled = module.config._if;
          unit = module.config.content.systemd.services.appliance-warden;
        }"#,
    );
    assert_eq!(
        out["options"],
        serde_json::json!(["enable", "extraArgs", "package", "plan"])
    );
    assert_eq!(out["package"], serde_json::json!({ "_package": "agent-appliance" }));
    assert_eq!(out["enabled"], true);
    let unit = &out["unit"];
    // It needs the account and rooms bootstrap makes, and Synapse.
    assert_eq!(
        unit["after"],
        serde_json::json!(["matrix-synapse.service", "appliance-bootstrap.service"])
    );
    assert_eq!(unit["requires"], serde_json::json!(["appliance-bootstrap.service"]));
    assert_eq!(unit["wantedBy"], serde_json::json!(["multi-user.target"]));
    // Its health notices come from the host's docker CLI.
    assert_eq!(unit["path"], serde_json::json!([{ "name": "docker" }]));
    let service = &unit["serviceConfig"];
    assert_eq!(
        service["ExecStart"],
        "appliance/bin/appliance warden --plan /nix/store/0000-plan.json --homeserver http://127.0.0.1:8008"
    );
    assert_eq!(service["Restart"], "on-failure");
    // Its state lives where the warden writes it (<state_dir>/warden of the
    // plan), the one writable place under ProtectSystem=strict.
    assert_eq!(
        service["StateDirectory"],
        format!("appliance/{}", agent_appliance::warden::WARDEN_DIR).as_str()
    );
    assert_eq!(
        agent_appliance::model::STATE_DIR,
        "/var/lib/appliance",
        "StateDirectory above is relative to /var/lib"
    );
    assert_eq!(service["StateDirectoryMode"], "0700");
    assert_eq!(service["ProtectSystem"], "strict");

    let off = eval_module(
        "modules/warden.nix",
        "{ appliance.warden.enable = false; }",
        "module.config._if",
    );
    assert_eq!(off, false);
}

/// Every option a hand-written module declares is documented.
#[test]
fn the_warden_options_are_documented() {
    let docs = read(&root().join("docs/warden.md"));
    for option in ["enable", "package", "plan", "extraArgs"] {
        assert!(
            docs.contains(&format!("`appliance.warden.{option}`")),
            "docs/warden.md does not document `appliance.warden.{option}`"
        );
    }
}
