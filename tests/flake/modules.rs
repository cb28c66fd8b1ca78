//! The hand-written NixOS modules of modules/, evaluated with a stub `lib`:
//! the options they declare, and the units they make from them.

#[allow(unused_imports)]
use super::*;

/// Just the `lib` the hand-written modules call: options are returned as
/// written (so their declarations can be inspected), `mkIf` keeps its
/// condition and, as NixOS does, leaves a false branch unevaluated.
const STUB_MODULE_LIB: &str = r#"
{
  mkEnableOption = description: { _enable = description; };
  mkPackageOption = _pkgs: name: _extra: { _package = name; };
  mkOption = option: option;
  types = {
    path = "path"; str = "str"; listOf = type: "listOf ${type}"; nullOr = type: "nullOr ${type}";
    strMatching = regex: "strMatching ${regex}";
    attrsOf = type: { _attrsOf = type; };
    submodule = module: { _submodule = module; };
  };
  mkIf = condition: content: { _if = condition; } // (if condition then { inherit content; } else { });
  getExe = pkg: "${pkg.name}/bin/${pkg.name}";
  literalExpression = text: { _literal = text; };
  attrValues = builtins.attrValues;
  # As nixpkgs' lib/lists.nix: the first of each, in order.
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
  concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
  # As nixpkgs' lib/strings.nix writes it: the tests run what it quotes.
  escapeShellArg = arg:
    let string = toString arg; in
    if builtins.match "[[:alnum:],._+:@%/-]+" string == null
    then "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] string}'"
    else string;
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
    pkgs = {{ coreutils = {{ name = "coreutils"; }}; }};
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
    }; appliance.egress.grantFiles = [ "/var/lib/appliance/egress-grants/bot" "/var/lib/appliance/egress-grants/b2" ];
    virtualisation.docker.package = { name = "docker"; }; systemd.package = { name = "systemd"; }; }"#;
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
    // Its health notices come from the host's docker CLI; `systemctl
    // reload squid.service` makes the proxy read the grant files again.
    assert_eq!(
        unit["path"],
        serde_json::json!([{ "name": "docker" }, { "name": "systemd" }])
    );
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
    // Besides, the grant files' directory, once: it renames new files there.
    assert_eq!(
        service["ReadWritePaths"],
        serde_json::json!(["/var/lib/appliance/egress-grants"])
    );
    assert_eq!(agent_appliance::grants::GRANTS_DIR, "/var/lib/appliance/egress-grants");

    let off = eval_module(
        "modules/warden.nix",
        "{ appliance.warden.enable = false; }",
        "module.config._if",
    );
    assert_eq!(off, false);
}

#[test]
fn the_bootstrap_module_makes_the_secrets_before_synapse_and_the_rest_after() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let config = r#"{ appliance.bootstrap = {
      enable = true; package = { name = "appliance"; }; plan = "/nix/store/0000-plan.json";
    }; }"#;
    let out = eval_module(
        "modules/bootstrap.nix",
        config,
        r#"{
          options = builtins.attrNames module.options.appliance.bootstrap;
          enabled = module.config._if;
          secrets = module.config.content.systemd.services.appliance-secrets;
          bootstrap = module.config.content.systemd.services.appliance-bootstrap;
        }"#,
    );
    assert_eq!(out["options"], serde_json::json!(["enable", "package", "plan"]));
    assert_eq!(out["enabled"], true);
    let secrets = &out["secrets"];
    assert_eq!(secrets["before"], serde_json::json!(["matrix-synapse.service"]));
    assert_eq!(
        secrets["serviceConfig"]["ExecStart"],
        "appliance/bin/appliance bootstrap --plan /nix/store/0000-plan.json --secrets-only"
    );
    assert_eq!(secrets["serviceConfig"]["UMask"], "0077");
    let bootstrap = &out["bootstrap"];
    assert_eq!(bootstrap["after"], serde_json::json!(["matrix-synapse.service"]));
    assert_eq!(bootstrap["requires"], serde_json::json!(["matrix-synapse.service"]));
    assert_eq!(bootstrap["wantedBy"], serde_json::json!(["multi-user.target"]));
    assert_eq!(
        bootstrap["serviceConfig"]["ExecStart"],
        "appliance/bin/appliance bootstrap --plan /nix/store/0000-plan.json"
    );
    // The warden reads the plan bootstrap runs unless told otherwise.
    let plan = eval_module(
        "modules/warden.nix",
        r#"{ appliance.warden.enable = true; appliance.bootstrap.plan = "/nix/store/0000-plan.json"; }"#,
        "module.options.appliance.warden.plan.default",
    );
    assert_eq!(plan, "/nix/store/0000-plan.json");
}

#[test]
fn the_egress_module_loads_the_generated_files_into_nftables_squid_and_dnsmasq() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("inet.nft", "chain forward {}\n"),
        ("bridge.nft", "chain b {}\n"),
        ("squid.conf", "http_port 3128\n"),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let config = |proxy: bool, resolver: bool| {
        format!(
            r#"{{ appliance.egress = {{ enable = true; inetTable = {d}/inet.nft; bridgeTable = {d}/bridge.nft;
                proxyConfig = {proxy}; resolver = {resolver}; networkUnit = "appliance-network.service";
                grantFiles = [ "/var/lib/appliance/egress-grants/bot" "/var/lib/appliance/egress-grants/b2" ]; }}; }}"#,
            d = dir.path().display(),
            proxy = if proxy {
                format!("{}/squid.conf", dir.path().display())
            } else {
                "null".into()
            },
            resolver = if resolver { "\"10.88.0.1\"" } else { "null" },
        )
    };
    let select = r#"{
      options = builtins.attrNames module.options.appliance.egress;
      nftables = module.config.networking.nftables;
      squid = module.config.services.squid;
      squidUnit = module.config.systemd.services.squid;
      tmpfiles = module.config.systemd.tmpfiles.rules;
      dnsmasq = module.config.services.dnsmasq;
    }"#;
    let out = eval_module("modules/egress.nix", &config(true, true), select);
    assert_eq!(
        out["options"],
        serde_json::json!([
            "bridgeTable",
            "enable",
            "grantFiles",
            "inetTable",
            "networkUnit",
            "proxyConfig",
            "resolver"
        ])
    );
    let nftables = &out["nftables"]["content"];
    assert_eq!(out["nftables"]["_if"], true);
    assert_eq!(nftables["flushRuleset"], false, "the host's own rules stay");
    assert_eq!(
        nftables["tables"]["appliance_egress"],
        serde_json::json!({ "family": "inet", "content": "chain forward {}\n" })
    );
    assert_eq!(nftables["tables"]["appliance_bridge"]["family"], "bridge");
    assert_eq!(nftables["preCheckRuleset"]["_if"], true);
    assert_eq!(
        out["squid"],
        serde_json::json!({ "_if": true, "content": { "enable": true, "configText": "http_port 3128\n" } })
    );
    assert_eq!(
        out["squidUnit"]["content"]["after"],
        serde_json::json!(["appliance-network.service"])
    );
    // The grant files exist, empty, before squid starts; `f` never
    // truncates one the warden wrote.
    assert_eq!(out["tmpfiles"]["_if"], true);
    assert_eq!(
        out["tmpfiles"]["content"],
        serde_json::json!([
            "d /var/lib/appliance/egress-grants 0755 root root -",
            "f /var/lib/appliance/egress-grants/bot 0644 root root -",
            "f /var/lib/appliance/egress-grants/b2 0644 root root -"
        ])
    );
    assert_eq!(out["dnsmasq"]["_if"], true);
    assert_eq!(
        out["dnsmasq"]["content"]["settings"]["listen-address"],
        serde_json::json!(["10.88.0.1"])
    );
    // No proxy, no resolver: neither service.
    let out = eval_module("modules/egress.nix", &config(false, false), select);
    assert_eq!(out["squid"]["_if"], false);
    assert_eq!(out["dnsmasq"]["_if"], false);
    assert_eq!(out["nftables"]["content"]["preCheckRuleset"]["_if"], false);
}

#[test]
fn the_service_secrets_module_makes_each_env_file_once_whatever_its_path() {
    use std::os::unix::fs::PermissionsExt;
    let Some(_) = nix_instantiate() else {
        return;
    };
    // Paths a shell would split or expand unless every value is quoted: a
    // quote, a `$`, a space, a glob.
    let dir = tempfile::tempdir().unwrap();
    let search = dir.path().join("it's $HOME/sear*xng \"x\"/env");
    let extract = dir.path().join("webextract/`id`/env");
    let values = serde_json::json!({ "appliance": { "serviceSecrets": {
        "searxng": { "file": search, "variable": "SEARXNG_SECRET" },
        "webextract": { "file": extract, "variable": "TAVILY_API_KEY" },
    } } });
    let config = dir.path().join("config.json");
    std::fs::write(&config, values.to_string()).unwrap();
    let out = eval_module(
        "modules/service-secrets.nix",
        &format!("builtins.fromJSON (builtins.readFile {})", config.display()),
        r#"{
          option = module.options.appliance.serviceSecrets;
          enabled = module.config._if;
          unit = module.config.content.systemd.services.appliance-service-secrets;
        }"#,
    );
    let fields = &out["option"]["type"]["_attrsOf"]["_submodule"]["options"];
    assert_eq!(fields["file"]["type"], "strMatching /.+");
    assert_eq!(fields["variable"]["type"], "strMatching [A-Za-z_][A-Za-z0-9_]*");
    assert_eq!(out["option"]["default"], serde_json::json!({}));
    assert_eq!(out["enabled"], true);
    let unit = &out["unit"];
    // Nothing starts it but the sandboxes that need its files.
    assert_eq!(unit.get("wantedBy"), None);
    assert_eq!(
        unit["serviceConfig"],
        serde_json::json!({ "Type": "oneshot", "RemainAfterExit": true, "UMask": "0077" })
    );
    assert_eq!(unit["path"], serde_json::json!([{ "name": "coreutils" }]));

    // The script as systemd runs it (nixpkgs' `script`: bash -e), twice:
    // each file is made once, 0400, in a 0700 directory, and kept.
    let script = unit["script"].as_str().unwrap();
    let run = || {
        let status = Command::new("bash")
            .args(["-e", "-c", script])
            .env("HOME", "/nonexistent")
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    };
    run();
    let mut first = Vec::new();
    for (file, variable) in [(&search, "SEARXNG_SECRET"), (&extract, "TAVILY_API_KEY")] {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}\n{script}", file.display()));
        let key = text
            .strip_prefix(&format!("{variable}="))
            .and_then(|k| k.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("{text:?}"));
        assert!(
            key.len() >= 40 && key.chars().all(|c| c.is_ascii_alphanumeric()),
            "{key:?}"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(file), 0o400);
        assert_eq!(mode(file.parent().unwrap()), 0o700);
        assert!(!Path::new(&format!("{}.tmp", file.display())).exists());
        first.push(text);
    }
    assert!(!dir.path().join("it's /nonexistent").exists(), "`$HOME` was expanded");
    run();
    assert_eq!(
        first,
        [
            std::fs::read_to_string(&search).unwrap(),
            std::fs::read_to_string(&extract).unwrap()
        ],
        "a second boot keeps the keys the services already share"
    );

    let none = eval_module(
        "modules/service-secrets.nix",
        "{ appliance.serviceSecrets = { }; }",
        "module.config._if",
    );
    assert_eq!(none, false, "no secrets, no unit");
}

/// Every option a hand-written module of modules/ declares is in
/// docs/options.md.
#[test]
fn every_module_option_is_documented() {
    let docs = read(&root().join("docs/options.md"));
    let declared: Vec<String> = nix_files(&root().join("modules"))
        .iter()
        .flat_map(|file| defined_paths(&read(file)))
        .filter_map(|p| p.strip_prefix("options.").map(str::to_string))
        .collect();
    assert!(declared.len() >= 12, "found only {declared:?}");
    let missing: Vec<&String> = declared
        .iter()
        .filter(|option| !docs.contains(&format!("`{option}`")))
        .collect();
    assert!(missing.is_empty(), "docs/options.md does not document {missing:?}");
}
