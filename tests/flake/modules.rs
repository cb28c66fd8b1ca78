//! The hand-written NixOS modules of modules/, evaluated with a stub `lib`:
//! the options they declare, and the units they make from them.

#[allow(unused_imports)]
use super::*;

/// Just the `lib` the hand-written modules call: options are returned as
/// written (so their declarations can be inspected), `mkIf` keeps its
/// condition and, as NixOS does, leaves a false branch unevaluated.
pub(super) const STUB_MODULE_LIB: &str = r#"
rec {
  mkEnableOption = description: { _enable = description; };
  mkPackageOption = _pkgs: name: _extra: { _package = name; };
  mkOption = option: option;
  types = {
    path = "path"; str = "str"; bool = "bool"; package = "package"; nullOr = type: "nullOr ${type}";
    listOf = type: if builtins.isString type then "listOf ${type}" else { _listOf = type; };
    strMatching = regex: "strMatching ${regex}";
    ints.positive = "ints.positive"; ints.unsigned = "ints.unsigned"; port = "port";
    attrsOf = type: { _attrsOf = type; };
    submodule = module: { _submodule = module; };
  };
  mkIf = condition: content: { _if = condition; } // (if condition then { inherit content; } else { });
  # Kept as written: the tests check what a module adds after the others.
  mkAfter = value: { _after = value; };
  mkBefore = value: { _before = value; };
  mkForce = value: { _force = value; };
  getExe = pkg: "${pkg.name}/bin/${pkg.name}";
  getExe' = pkg: exe: "${pkg.name}/bin/${exe}";
  importJSON = path: builtins.fromJSON (builtins.readFile path);
  mapAttrs = builtins.mapAttrs;
  mapAttrsToList = f: set: map (name: f name set.${name}) (builtins.attrNames set);
  mkOverride = priority: value: { _override = priority; inherit value; };
  mkDefault = value: { _default = value; };
  elem = builtins.elem;
  versionAtLeast = a: b: builtins.compareVersions a b >= 0;
  mapAttrs' = f: set: builtins.listToAttrs (map (name: f name set.${name}) (builtins.attrNames set));
  nameValuePair = name: value: { inherit name value; };
  filterAttrs = pred: set:
    builtins.listToAttrs (builtins.concatMap (name: if pred name set.${name} then [ { inherit name; value = set.${name}; } ] else [ ]) (builtins.attrNames set));
  optional = condition: value: if condition then [ value ] else [ ];
  optionalAttrs = condition: set: if condition then set else { };
  literalExpression = text: { _literal = text; };
  attrValues = builtins.attrValues;
  # As nixpkgs' lib/lists.nix: the first of each, in order.
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
  concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
  concatStrings = builtins.concatStringsSep "";
  # As nixpkgs' lib/strings.nix writes it: the tests run what it quotes.
  escapeShellArg = arg:
    let string = toString arg; in
    if builtins.match "[[:alnum:],._+:@%/-]+" string == null
    then "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] string}'"
    else string;
  escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);
}
"#;

/// The stub host arguments (`args.nix`, `outputs::STUB_HOST_ARGS`) and
/// the modules' stub `lib` (`module-lib.nix`), in a directory of their own.
pub(super) fn host_stub() -> tempfile::TempDir {
    let stub = tempfile::tempdir().unwrap();
    std::fs::write(stub.path().join("args.nix"), super::outputs::STUB_HOST_ARGS).unwrap();
    std::fs::write(stub.path().join("module-lib.nix"), STUB_MODULE_LIB).unwrap();
    stub
}

/// A directory with `spec` as its `appliance.toml`, generated there.
fn generated(spec: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("appliance.toml"), spec).unwrap();
    let output = crate::support::run_in(dir.path(), &["generate"]);
    crate::support::assert_succeeded("appliance generate", &output);
    dir
}

/// `file` with `config` (the module off, or given nothing to do) sets
/// nothing: its whole `config` is one `mkIf` that is false.
#[track_caller]
fn assert_sets_nothing(file: &str, config: &str) {
    assert_eq!(
        eval_module(file, config, "module.config._if"),
        false,
        "{file} with {config}"
    );
}

fn eval_module(file: &str, config: &str, select: &str) -> Value {
    let stub = tempfile::tempdir().unwrap();
    std::fs::write(stub.path().join("lib.nix"), STUB_MODULE_LIB).unwrap();
    eval_json(&format!(
        r#"
let
  module = import {root}/{file} {{
    lib = import {stub}/lib.nix;
    pkgs = {{
      coreutils = {{ name = "coreutils"; }};
      wireguard-tools = {{ name = "wireguard-tools"; }};
      # Interpolated into strings, so with a store path of their own.
      bash = {{ name = "bash"; outPath = "/stub/bash"; }};
      curl = {{ name = "curl"; outPath = "/stub/curl"; }};
      openssl = {{ name = "openssl"; }};
      gvisor = {{ name = "gvisor"; version = "20260406.0"; }};
    }};
    utils.escapeSystemdExecArgs = args: builtins.concatStringsSep " " args;
    # The image builders (images/default.nix) return the description they
    # are given: which builder, with what.
    applianceImages.fromGenerated = file:
      let description = builtins.fromJSON (builtins.readFile file);
      in {{ builder = description.image; args = removeAttrs description [ "image" ]; }};
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
        format!("appliance/{}", agent_appliance::on_host::warden::WARDEN_DIR).as_str()
    );
    assert_eq!(
        agent_appliance::generator::model::STATE_DIR,
        "/var/lib/appliance",
        "StateDirectory above is relative to /var/lib"
    );
    assert_eq!(service["StateDirectoryMode"], "0700");
    assert_eq!(service["ProtectSystem"], "strict");
    // Besides, the grant files' directory, once: it renames new files
    // there; and the approval brokers' sockets' (optional: `-`).
    assert_eq!(
        service["ReadWritePaths"],
        serde_json::json!(["/var/lib/appliance/egress-grants", "-/run/appliance/approval"])
    );
    assert_eq!(
        agent_appliance::generator::model::APPROVAL_SOCKET_DIR,
        "/run/appliance/approval"
    );
    assert_eq!(
        agent_appliance::common::grants::GRANTS_DIR,
        "/var/lib/appliance/egress-grants"
    );

    assert_sets_nothing("modules/warden.nix", "{ appliance.warden.enable = false; }");
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
    // ... and runs wherever the bootstrap does, unless a host turns it off.
    for enable in [true, false] {
        let config = format!("{{ appliance.warden.enable = false; appliance.bootstrap.enable = {enable}; }}");
        let default = eval_module(
            "modules/warden.nix",
            &config,
            "module.options.appliance.warden.enable.default",
        );
        assert_eq!(default, enable);
    }
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
                grantFiles = [ "/var/lib/appliance/egress-grants/bot" "/var/lib/appliance/egress-grants/b2" ];
                credentials = {{ }}; }};
                services.squid.package = "/stub/squid"; }}"#,
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
            "credentials",
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
    // No credential: no CA, nothing before squid starts.
    assert_eq!(out["squidUnit"]["content"]["preStart"]["_if"], false);
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

/// With a credential the proxy adds: the CA is made at first boot before
/// squid, squid's configuration names the package's certificate
/// generator, and squid's start writes each include file from the
/// operator's token file, refusing a token that could be more than a
/// token. The script runs here as systemd runs it (bash -e), with its
/// fixed directories moved into a temporary one and `chgrp`/`chown`
/// stand-ins (this machine has no `squid` group).
#[test]
fn the_egress_module_writes_each_credential_from_its_token_file_at_squids_start() {
    use std::os::unix::fs::PermissionsExt;
    let Some(_) = nix_instantiate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("inet.nft", "chain forward {}\n"),
        ("bridge.nft", "chain b {}\n"),
        (
            "squid.conf",
            "sslcrtd_program @SECURITY_FILE_CERTGEN@ -s /var/cache/squid/ssl_db -M 4MB\n",
        ),
    ] {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let include = "/var/lib/appliance/egress-proxy/bot-github.conf";
    let token_file = dir.path().join("token");
    let values = serde_json::json!({
        "appliance": { "egress": {
            "enable": true,
            "inetTable": dir.path().join("inet.nft"),
            "bridgeTable": dir.path().join("bridge.nft"),
            "proxyConfig": dir.path().join("squid.conf"),
            "resolver": null,
            "networkUnit": "appliance-network.service",
            "grantFiles": [],
            "credentials": { include: {
                "tokenFile": token_file,
                "before": "request_header_add Authorization \"token ",
                "after": "\" sandbox_bot credential_hosts_bot_github",
            } },
        } },
        "services": { "squid": { "package": "/stub/squid" } },
    });
    let config = dir.path().join("config.json");
    std::fs::write(&config, values.to_string()).unwrap();
    let out = eval_module(
        "modules/egress.nix",
        &format!("builtins.fromJSON (builtins.readFile {})", config.display()),
        r#"{
          squid = module.config.services.squid.content.configText;
          squidUnit = module.config.systemd.services.squid.content;
          ca = module.config.systemd.services.appliance-egress-ca;
        }"#,
    );
    assert_eq!(
        out["squid"],
        "sslcrtd_program /stub/squid/libexec/security_file_certgen -s /var/cache/squid/ssl_db -M 4MB\n"
    );
    let unit = &out["squidUnit"];
    assert_eq!(
        unit["after"],
        serde_json::json!(["appliance-network.service", "appliance-egress-ca.service"])
    );
    assert_eq!(unit["requires"], serde_json::json!(["appliance-egress-ca.service"]));
    assert_eq!(out["ca"]["_if"], true);
    let ca = &out["ca"]["content"];
    assert_eq!(ca["serviceConfig"]["UMask"], "0077");
    let ca_script = ca["script"].as_str().unwrap();
    assert!(
        ca_script.contains("if [ ! -s /var/lib/appliance/egress-proxy/ca.key ]"),
        "{ca_script}"
    );
    assert!(
        ca_script.contains("chmod 0440 /var/lib/appliance/egress-proxy/ca.key.tmp"),
        "{ca_script}"
    );
    assert_eq!(
        (
            agent_appliance::generator::model::credentials::CA_KEY,
            agent_appliance::generator::model::credentials::CA_CERT
        ),
        (
            "/var/lib/appliance/egress-proxy/ca.key",
            "/var/lib/appliance/egress-ca/ca.pem"
        ),
        "the module makes the files the generated configuration names"
    );

    assert_eq!(unit["preStart"]["_if"], true);
    // Ordered before nixpkgs' own preStart (`squid -z -f <conf>`, which
    // stops on a missing include file).
    let script = unit["preStart"]["content"]["_before"].as_str().unwrap();
    let moved = dir.path().join("root");
    let script = script
        .replace("/var/", &format!("{}/var/", moved.display()))
        .replace("/stub/squid/libexec/security_file_certgen", "true");
    let run = || {
        let output = Command::new("bash")
            .args(["-e", "-c", &format!("chgrp() {{ :; }}\nchown() {{ :; }}\n{script}")])
            .output()
            .unwrap();
        assert!(output.status.success(), "{script}\n{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let written = moved.join(include.trim_start_matches('/'));
    let line = || std::fs::read_to_string(&written).unwrap();
    // No token file yet: a comment, and a word in the journal.
    let said = run();
    assert_eq!(line(), "# no credential in the token file\n");
    assert!(said.contains("no credential in"), "{said}");
    assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o440);
    // A token: the line around it, nothing else.
    std::fs::write(&token_file, "ghp_0123456789abcdefABCDEF_xyz\n").unwrap();
    run();
    assert_eq!(
        line(),
        "request_header_add Authorization \"token ghp_0123456789abcdefABCDEF_xyz\" sandbox_bot credential_hosts_bot_github\n"
    );
    // Anything that could end the quoted value or start another directive
    // is refused, whole.
    for hostile in ["ghp_x\" all\nhttp_access allow all", "ghp_$(id)", "ghp_%{x}"] {
        std::fs::write(&token_file, hostile).unwrap();
        let said = run();
        assert_eq!(line(), "# the token file's credential was refused\n", "{hostile:?}");
        assert!(said.contains("has characters other than"), "{said}");
    }
    assert!(!Path::new(&format!("{}.tmp", written.display())).exists());
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
        // 32 bytes are 43 base64 characters before `+` and `/` go: about
        // one key in 23 loses more than 3 (so `>= 40` failed that often),
        // fewer than one in 100 million more than 11.
        assert!(
            key.len() >= 32 && key.chars().all(|c| c.is_ascii_alphanumeric()),
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

    // No secrets, no unit.
    assert_sets_nothing("modules/service-secrets.nix", "{ appliance.serviceSecrets = { }; }");
}

#[test]
fn the_models_module_pulls_after_ollamas_sandbox_and_holds_back_readiness() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let config = r#"{ appliance.models = { enable = true; sandboxUnit = "docker-ollama.service";
        url = "http://10.88.0.2:11434"; names = [ "a:1" "b/c:2" ]; }; }"#;
    let out = eval_module(
        "modules/models.nix",
        config,
        r#"{
          options = builtins.attrNames module.options.appliance.models;
          unitType = module.options.appliance.models.sandboxUnit.type;
          urlType = module.options.appliance.models.url.type;
          namesType = module.options.appliance.models.names.type;
          enabled = module.config._if;
          unit = module.config.content.systemd.services.appliance-models;
          ready = module.config.content.appliance.ready.units;
        }"#,
    );
    assert_eq!(
        out["options"],
        serde_json::json!(["enable", "names", "sandboxUnit", "url"])
    );
    assert_eq!(out["unitType"], "strMatching [A-Za-z0-9:_.@-]+[.]service");
    // Each is one word of the unit's command line.
    assert_eq!(out["urlType"], "strMatching https?://[^[:space:]]+");
    assert_eq!(out["namesType"], "listOf strMatching [A-Za-z0-9._:/-]+");
    assert_eq!(out["enabled"], true);
    let unit = &out["unit"];
    // It needs Ollama's sandbox answering, and stops with it.
    assert_eq!(unit["after"], serde_json::json!(["docker-ollama.service"]));
    assert_eq!(unit["requires"], serde_json::json!(["docker-ollama.service"]));
    assert_eq!(unit["wantedBy"], serde_json::json!(["multi-user.target"]));
    assert_eq!(unit["path"], serde_json::json!(["/stub/curl"]));
    let service = &unit["serviceConfig"];
    assert_eq!(service["Type"], "oneshot");
    assert_eq!(service["RemainAfterExit"], true);
    assert_eq!(service["TimeoutStartSec"], "infinity", "a model is tens of gigabytes");
    // The module's own script (modules/pull-models.sh), copied into the
    // store and run by sh with the URL and the models.
    let exec = service["ExecStart"].as_str().unwrap();
    // (The tests' Nix keeps its store in a scratch directory.)
    let words: Vec<&str> = exec
        .strip_prefix("/stub/bash/bin/sh ")
        .unwrap_or_else(|| panic!("{exec}"))
        .split(' ')
        .collect();
    assert!(
        words[0].starts_with('/') && words[0].contains("/store/") && words[0].ends_with("-pull-models.sh"),
        "{exec}"
    );
    assert_eq!(words[1..], ["http://10.88.0.2:11434", "a:1", "b/c:2"], "{exec}");
    // Readiness waits for the pull, after every unit the host lists.
    assert_eq!(
        out["ready"],
        serde_json::json!({ "_after": ["appliance-models.service"] })
    );

    // No pull, no unit, and readiness does not wait for one.
    assert_sets_nothing("modules/models.nix", "{ appliance.models.enable = false; }");
}

#[test]
fn the_ready_module_makes_the_target_of_the_units_listed() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let select = r#"{
      option = module.options.appliance.ready.units;
      enabled = module.config._if;
      target = module.config.content.systemd.targets.appliance-ready or null;
    }"#;
    let out = eval_module(
        "modules/ready.nix",
        r#"{ appliance.enable = true; appliance.ready.units = [ "docker-a.service" "appliance-models.service" ]; }"#,
        select,
    );
    assert_eq!(
        out["option"]["type"],
        "listOf strMatching [A-Za-z0-9:_.@-]+[.](service|target|mount|socket|path)"
    );
    assert_eq!(out["option"]["default"], serde_json::json!([]));
    assert_eq!(out["enabled"], true);
    let units = serde_json::json!(["docker-a.service", "appliance-models.service"]);
    assert_eq!(
        out["target"],
        serde_json::json!({
            "description": "The appliance is ready",
            "wantedBy": ["multi-user.target"],
            "requires": units,
            "after": units,
        })
    );
    // A machine without the appliance has no target.
    let off = eval_module(
        "modules/ready.nix",
        "{ appliance.enable = false; appliance.ready.units = [ ]; }",
        select,
    );
    assert_eq!(off["enabled"], false);
    assert_eq!(off["target"], Value::Null);
}

#[test]
fn the_synapse_module_runs_the_generated_settings_on_a_c_locale_postgresql() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    // The hub's values, as its generated values (options.json, through
    // nix/generated.nix) set them: the settings file is the generated
    // synapse.json.
    let settings = root().join("generated/hosts/hub/synapse.json");
    let config = |postgresql: bool, allowed: &str| {
        format!(
            r#"{{ appliance.synapse = {{
              enable = true; settingsFile = {settings};
              postgresql = {{ enable = {postgresql}; name = "matrix-synapse"; }};
              after = [ "appliance-network.service" "wireguard-wg-appliance.service" ];
              requires = [ "appliance-network.service" ]; wants = [ "network-online.target" ];
              allowedAddresses = {allowed};
            }}; }}"#,
            settings = settings.display(),
        )
    };
    let select = r#"{
      options = builtins.attrNames module.options.appliance.synapse;
      postgresqlOptions = builtins.attrNames module.options.appliance.synapse.postgresql;
      unitType = module.options.appliance.synapse.after.type;
      enabled = module.config._if;
      synapse = module.config.content.services.matrix-synapse;
      postgresql = module.config.content.services.postgresql;
      unit = module.config.content.systemd.services.matrix-synapse;
    }"#;
    let out = eval_module(
        "modules/synapse.nix",
        &config(true, r#"[ "localhost" "10.88.0.0/16" ]"#),
        select,
    );
    assert_eq!(
        out["options"],
        serde_json::json!([
            "after",
            "allowedAddresses",
            "enable",
            "postgresql",
            "requires",
            "settingsFile",
            "wants"
        ])
    );
    assert_eq!(out["postgresqlOptions"], serde_json::json!(["enable", "name"]));
    // Device units carry systemd's `\x2d` escapes.
    assert_eq!(
        out["unitType"],
        "listOf strMatching [A-Za-z0-9:_.@\\-]+[.](service|target|device|mount|socket|path)"
    );
    assert_eq!(out["enabled"], true);
    // The settings are the generated file's, unchanged.
    assert_eq!(
        out["synapse"],
        serde_json::json!({ "enable": true, "settings": read_json(&settings) })
    );
    // Synapse refuses a database whose collation is not C; the role is
    // Synapse's system user (peer authentication, no password); no TCP.
    assert_eq!(out["postgresql"]["_if"], true);
    assert_eq!(
        out["postgresql"]["content"],
        serde_json::json!({
            "enable": true,
            "initdbArgs": ["--locale=C", "--encoding=UTF8"],
            "ensureDatabases": ["matrix-synapse"],
            "ensureUsers": [{ "name": "matrix-synapse", "ensureDBOwnership": true }],
            "settings": { "listen_addresses": { "_force": "" } },
        })
    );
    // The generated database section names the same role and database.
    let database = &read_json(&settings)["database"];
    assert_eq!(database["name"], "psycopg2");
    assert_eq!(database["args"]["user"], "matrix-synapse");
    assert_eq!(database["args"]["database"], "matrix-synapse");
    let unit = &out["unit"];
    assert_eq!(
        unit["after"],
        serde_json::json!(["appliance-network.service", "wireguard-wg-appliance.service"])
    );
    assert_eq!(unit["requires"], serde_json::json!(["appliance-network.service"]));
    assert_eq!(unit["wants"], serde_json::json!(["network-online.target"]));
    assert_eq!(
        unit["serviceConfig"],
        serde_json::json!({ "_if": true, "content": {
            "IPAddressDeny": "any",
            "IPAddressAllow": ["localhost", "10.88.0.0/16"],
        } })
    );

    // SQLite and federation: no database server, no address filter.
    let out = eval_module("modules/synapse.nix", &config(false, "null"), select);
    assert_eq!(out["postgresql"], serde_json::json!({ "_if": false }));
    assert_eq!(out["unit"]["serviceConfig"], serde_json::json!({ "_if": false }));
    let defaults = eval_module(
        "modules/synapse.nix",
        "{ appliance.synapse.enable = false; }",
        r#"{
          name = module.options.appliance.synapse.postgresql.name.default;
          allowed = module.options.appliance.synapse.allowedAddresses.default;
          enabled = module.config._if;
        }"#,
    );
    assert_eq!(
        defaults,
        serde_json::json!({ "name": "matrix-synapse", "allowed": null, "enabled": false })
    );
}

/// Ollama as a host service (`[inference] sandbox = "host"`): the spec
/// generated into a scratch directory, its host's generated values (through
/// nix/generated.nix) handed to modules/ollama.nix, which makes nixpkgs' `services.ollama` of them.
#[test]
fn the_ollama_module_serves_the_models_on_the_one_address_rust_chose() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let spec = read(&root().join("examples/minimal/appliance.toml"))
        .replace("models = [\"qwen3:4b\"]", "models = [\"qwen3:4b\"]\nsandbox = \"host\"");
    assert!(spec.contains("sandbox = \"host\""));
    let dir = generated(&spec);
    let stub = host_stub();
    let out = eval_json(&format!(
        r#"
let
  args = import {stub}/args.nix;
  pkgs = args.pkgs // {{ ollama = {{ name = "ollama"; }}; }};
  host = ((import {root}/nix/generated.nix {dir}/generated).hosts.box.module (args // {{
    inherit pkgs;
    config.appliance = {{ enable = true; host = "box"; }};
  }})).config.content;
  module = import {root}/modules/ollama.nix {{
    lib = import {stub}/module-lib.nix;
    inherit pkgs;
    # The defaults of `wants` (`[ ]`) and `package`, which the stub lib
    # leaves to the caller.
    config.appliance.ollama = {{
      wants = [ ];
      package = module.options.appliance.ollama.package.default;
    }} // host.appliance.ollama;
  }};
  # The same module on an NVIDIA host: the CUDA build.
  cuda = (import {root}/modules/ollama.nix {{
    lib = import {stub}/module-lib.nix;
    pkgs = pkgs // {{ ollama-cuda = {{ name = "ollama-cuda"; }}; }};
    config.appliance.ollama.cuda = true;
  }}).options.appliance.ollama.package.default;
in {{
  values = host.appliance.ollama;
  options = builtins.attrNames module.options.appliance.ollama;
  package = module.options.appliance.ollama.package.default;
  inherit cuda;
  port = module.options.appliance.ollama.port.default;
  enabled = module.config._if;
  ollama = module.config.content.services.ollama;
  unit = module.config.content.systemd.services.ollama;
  hostService = host ? services;
}}
"#,
        stub = stub.path().display(),
        dir = dir.path().display(),
        root = root().display(),
    ));
    assert_eq!(
        out["options"],
        serde_json::json!([
            "address", "after", "cuda", "enable", "models", "package", "port", "requires", "wants"
        ])
    );
    // Rust says whether the host is an NVIDIA one; the module picks the build.
    assert_eq!(out["values"]["cuda"], false);
    assert_eq!(out["package"], serde_json::json!({ "name": "ollama" }));
    assert_eq!(out["cuda"], serde_json::json!({ "name": "ollama-cuda" }));
    assert_eq!(out["port"], 11434);
    assert_eq!(out["enabled"], true);
    // The generated values set options only; the module makes the service,
    // on the host's bridge address (model::Inference::bind_address).
    assert_eq!(out["hostService"], false);
    let appliance = agent_appliance::operator::commands::load(&dir.path().join("appliance.toml")).unwrap();
    let inference = appliance.inference.as_ref().unwrap();
    assert!(inference.sandbox.is_none());
    assert_eq!(
        out["ollama"],
        serde_json::json!({
            "enable": true,
            "package": { "name": "ollama" },
            "host": inference.bind_address.to_string(),
            "port": inference.port,
            "loadModels": ["qwen3:4b"],
        })
    );
    assert_eq!(inference.bind_address.to_string(), "10.88.0.1");
    // It listens on the bridge, so it needs the bridge; no overlay here.
    assert_eq!(
        out["unit"],
        serde_json::json!({
            "after": ["appliance-network.service"],
            "requires": ["appliance-network.service"],
            "wants": [],
        })
    );
    assert_eq!(out["values"].get("wants"), None, "no overlay, no wants");

    // In `gvisor` mode Ollama is a sandbox, not this service.
    assert_sets_nothing("modules/ollama.nix", "{ appliance.ollama.enable = false; }");
}

/// Runs the WireGuard key unit's script as systemd does (nixpkgs'
/// `script`: bash -e; the unit's `UMask=0077`) with a fake `wg` on its path
/// whose `genkey` prints `key` and whose `pubkey` prints "PUBLIC(<stdin>)";
/// returns its output.
fn run_key_script(script: &str, key: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let wg = bin.path().join("wg");
    std::fs::write(
        &wg,
        "#!/bin/sh\ncase \"$1\" in\n  genkey) printf '%s\\n' \"$KEY\" ;;\n  pubkey) printf 'PUBLIC(%s)\\n' \"$(cat)\" ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&wg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap());
    let output = Command::new("bash")
        .args(["-e", "-c", &format!("umask 0077\n{script}")])
        .env("PATH", path)
        .env("KEY", key)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    crate::support::assert_succeeded(script, &output);
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_wireguard_module_makes_the_key_once_and_the_overlay_of_the_values() {
    use std::os::unix::fs::PermissionsExt;
    let Some(_) = nix_instantiate() else {
        return;
    };
    // A key path a shell would split or expand unless quoted (no
    // whitespace: the option's type refuses it, a systemd condition holds it).
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("it's$HOME/`id`/private.key");
    let values = serde_json::json!({
        "appliance": {
            "host": "pi's",
            "wireguard": {
                "enable": true,
                "interface": "wg-appliance",
                "address": "10.89.0.2/24",
                "port": 51820,
                "keyFile": key_file,
                "peers": [
                    { "publicKey": "A".repeat(43) + "=", "allowedIPs": ["10.89.0.1/32"],
                      "endpoint": "hub.example.org:51820", "persistentKeepalive": 25 },
                    { "publicKey": "B".repeat(43) + "=", "allowedIPs": ["10.89.0.3/32"],
                      "endpoint": null, "persistentKeepalive": null },
                ],
                "unpaired": ["edge"],
                "nonlocalBind": true,
            },
        },
    });
    let config = dir.path().join("config.json");
    let with_backend = |networkd: bool| {
        let mut values = values.clone();
        values["networking"] = serde_json::json!({ "wireguard": { "useNetworkd": networkd } });
        std::fs::write(&config, values.to_string()).unwrap();
        eval_module(
            "modules/wireguard.nix",
            &format!("builtins.fromJSON (builtins.readFile {})", config.display()),
            r#"{
              options = builtins.attrNames module.options.appliance.wireguard;
              peer = builtins.attrNames module.options.appliance.wireguard.peers.type._listOf._submodule.options;
              keyType = module.options.appliance.wireguard.keyFile.type;
              enabled = module.config._if;
              keyUnit = module.config.content.systemd.services.appliance-wireguard-key;
              interfaces = module.config.content.networking.wireguard.interfaces;
              sysctl = module.config.content.boot.kernel.sysctl;
              warnings = module.config.content.warnings;
            }"#,
        )
    };
    let out = with_backend(true);
    assert_eq!(
        out["options"],
        serde_json::json!([
            "address",
            "enable",
            "interface",
            "keyFile",
            "nonlocalBind",
            "peers",
            "port",
            "unpaired"
        ])
    );
    assert_eq!(
        out["peer"],
        serde_json::json!(["allowedIPs", "endpoint", "persistentKeepalive", "publicKey"])
    );
    assert_eq!(out["keyType"], "strMatching /[^[:space:]]+");
    assert_eq!(out["enabled"], true);
    // The interface of the values; a peer's endpoint and keepalive as given,
    // null (nixpkgs' defaults) where it dials in.
    let key = key_file.display().to_string();
    assert_eq!(
        out["interfaces"],
        serde_json::json!({ "wg-appliance": {
            "ips": ["10.89.0.2/24"],
            "listenPort": 51820,
            "privateKeyFile": key,
            "generatePrivateKeyFile": false,
            "peers": values["appliance"]["wireguard"]["peers"],
        } })
    );
    assert_eq!(
        out["sysctl"],
        serde_json::json!({ "net.ipv4.ip_nonlocal_bind": { "_if": true, "content": 1 } })
    );
    assert_eq!(
        out["warnings"],
        serde_json::json!([
            "appliance host `pi's`: host `edge` has no `wireguard-public-key` in appliance.toml, \
             so the link to it is down; pair them (docs/pairing.md)."
        ])
    );
    // networkd cannot make the key: our unit does, before systemd-networkd
    // reads it, once.
    let unit = &out["keyUnit"];
    assert_eq!(unit["_if"], true);
    let unit = &unit["content"];
    assert_eq!(unit["before"], serde_json::json!(["systemd-networkd.service"]));
    assert_eq!(unit["wantedBy"], serde_json::json!(["systemd-networkd.service"]));
    assert_eq!(
        unit["unitConfig"],
        serde_json::json!({ "DefaultDependencies": false, "ConditionPathExists": format!("!{key}") })
    );
    assert_eq!(
        unit["serviceConfig"],
        serde_json::json!({ "Type": "oneshot", "UMask": "0077" })
    );
    assert_eq!(
        unit["path"],
        serde_json::json!([{ "name": "wireguard-tools" }, { "name": "coreutils" }])
    );
    let script = unit["script"].as_str().unwrap();
    let printed = run_key_script(script, "SECRET");
    assert_eq!(printed, "WireGuard public key of pi's: PUBLIC(SECRET)\n");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), "SECRET\n");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(key_file.parent().unwrap()), 0o700);
    assert!(!Path::new(&format!("{key}.tmp")).exists());
    assert!(!dir.path().join("it's/nonexistent").exists(), "`$HOME` was expanded");

    // The scripted backend makes the key itself; no unit of ours.
    let out = with_backend(false);
    assert_eq!(out["keyUnit"], serde_json::json!({ "_if": false }));
    assert_eq!(out["interfaces"]["wg-appliance"]["generatePrivateKeyFile"], true);

    assert_sets_nothing(
        "modules/wireguard.nix",
        "{ appliance.wireguard.enable = false; networking.wireguard.useNetworkd = false; }",
    );
}

/// The committed spec is unpaired; paired (both public keys, the hub with
/// an endpoint), each host's generated values make a peer of the other
/// through modules/wireguard.nix: the Pi dials the hub and keeps the link
/// alive, the hub waits for the Pi.
#[test]
fn paired_hosts_generate_peers_the_wireguard_module_takes() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let (hub_key, pi_key) = ("H".repeat(43) + "=", "P".repeat(43) + "=");
    let spec = read(&root().join("appliance.toml"))
        .replace(
            "target = \"gce\"\n",
            &format!("target = \"gce\"\nwireguard-public-key = \"{hub_key}\"\nendpoint = \"hub.example.org\"\n"),
        )
        .replace(
            "target = \"rpi4\"\n",
            &format!("target = \"rpi4\"\nwireguard-public-key = \"{pi_key}\"\n"),
        );
    assert!(spec.contains(&pi_key) && spec.contains("hub.example.org"));
    let dir = generated(&spec);
    let stub = host_stub();
    let out = eval_json(&format!(
        r#"
let
  args = import {stub}/args.nix;
  values = name: ((import {root}/nix/generated.nix {dir}/generated).hosts.${{name}}.module (args // {{
    config.appliance = {{ enable = true; host = name; }};
  }})).config.content.appliance.wireguard;
  overlay = name: (import {root}/modules/wireguard.nix {{
    lib = import {stub}/module-lib.nix;
    inherit (args) pkgs;
    config = {{
      # The peers' defaults, which the stub lib leaves to the caller.
      appliance = {{ host = name; wireguard = values name // {{
        peers = map (peer: {{ endpoint = null; persistentKeepalive = null; }} // peer) (values name).peers;
      }}; }};
      networking.wireguard.useNetworkd = false;
    }};
  }}).config.content;
in {{
  hub = {{ inherit (overlay "hub") warnings; peers = (overlay "hub").networking.wireguard.interfaces.wg-appliance.peers; }};
  pi = {{ inherit (overlay "pi") warnings; peers = (overlay "pi").networking.wireguard.interfaces.wg-appliance.peers; }};
}}
"#,
        stub = stub.path().display(),
        dir = dir.path().display(),
        root = root().display(),
    ));
    assert_eq!(
        out,
        serde_json::json!({
            "hub": { "warnings": [], "peers": [{
                "publicKey": pi_key, "allowedIPs": ["10.89.0.2/32"], "endpoint": null, "persistentKeepalive": null,
            }] },
            "pi": { "warnings": [], "peers": [{
                "publicKey": hub_key, "allowedIPs": ["10.89.0.1/32"],
                "endpoint": "hub.example.org:51820", "persistentKeepalive": 25,
            }] },
        })
    );
}

/// The calls the fake `docker` of `run_network_script` received, each as
/// its arguments.
fn docker_calls(log: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.split_terminator("\n\n")
        .map(|call| call.lines().map(str::to_string).collect())
        .collect()
}

/// Runs the network unit's script as systemd does (nixpkgs' `script`:
/// bash -e) with a fake `docker` on its path that logs each call and
/// answers `network inspect` with `inspect_status`; returns the calls.
fn run_network_script(script: &str, inspect_status: i32) -> Vec<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let docker = dir.path().join("docker");
    std::fs::write(
        &docker,
        "#!/bin/sh\nprintf '%s\\n' docker \"$@\" >> \"$LOG\"\necho >> \"$LOG\"\n\
         if [ \"$1 $2\" = 'network inspect' ]; then exit \"$INSPECT_STATUS\"; fi\n",
    )
    .unwrap();
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("calls");
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap());
    let status = Command::new("bash")
        .args(["-e", "-c", script])
        .env("PATH", path)
        .env("LOG", &log)
        .env("INSPECT_STATUS", inspect_status.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
    docker_calls(&log)
}

#[test]
fn the_docker_module_points_every_runtime_at_runsc_and_makes_the_bridge_once() {
    use agent_appliance::generator::render::{docker_network, network_create};
    let Some(_) = nix_instantiate() else {
        return;
    };
    let appliance = agent_appliance::operator::commands::load(&root().join("appliance.toml")).unwrap();
    let daemon = root().join("generated/hosts/hub/docker-daemon.json");
    // Every host of the spec: the hub's bridge has GCE's MTU, the Pi's none.
    assert!(
        appliance
            .hosts
            .values()
            .any(|h| docker_network(&appliance, h).mtu.is_some())
    );
    assert!(
        appliance
            .hosts
            .values()
            .any(|h| docker_network(&appliance, h).mtu.is_none())
    );
    for host in appliance.hosts.values() {
        let mut network = serde_json::to_value(docker_network(&appliance, host)).unwrap();
        // The option's default (checked below), which the stub lib leaves
        // to the caller.
        network.as_object_mut().unwrap().entry("mtu").or_insert(Value::Null);
        let values = serde_json::json!({
            "appliance": { "docker": {
                "enable": true,
                "daemonSettings": daemon,
                "network": network,
            } },
            "virtualisation": { "docker": { "package": { "name": "docker" } } },
        });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, values.to_string()).unwrap();
        let out = eval_module(
            "modules/docker-gvisor.nix",
            // A path, as options.json's `daemonSettings` is once
            // nix/generated.nix has loaded it.
            &format!(
                r#"let c = builtins.fromJSON (builtins.readFile {}); in
                   c // {{ appliance.docker = c.appliance.docker // {{ daemonSettings = {}; }}; }}"#,
                config.display(),
                daemon.display()
            ),
            r#"{
              options = builtins.attrNames module.options.appliance.docker;
              network = builtins.attrNames module.options.appliance.docker.network;
              mtu = module.options.appliance.docker.network.mtu.default;
              minimum = module.options.appliance.docker.runscMinimum.default;
              enabled = module.config._if;
              docker = module.config.content.virtualisation.docker;
              unit = module.config.content.systemd.services.appliance-network;
            }"#,
        );
        assert_eq!(
            out["options"],
            serde_json::json!(["daemonSettings", "enable", "network", "runscMinimum"])
        );
        assert_eq!(
            out["network"],
            serde_json::json!(["bridge", "gateway", "mtu", "name", "subnet"])
        );
        // Every host's default: the pinned minimum `appliance doctor` checks.
        assert_eq!(out["minimum"], agent_appliance::generator::render::RUNSC_MINIMUM);
        assert_eq!(out["mtu"], Value::Null, "Docker's own MTU unless set");
        assert_eq!(out["enabled"], true);
        // The daemon settings as generated, each runtime run by this
        // nixpkgs' runsc.
        assert_eq!(out["docker"]["enable"], true);
        let mut expected = read_json(&daemon);
        for runtime in expected["runtimes"].as_object_mut().unwrap().values_mut() {
            runtime["path"] = "gvisor/bin/runsc".into();
        }
        assert_eq!(out["docker"]["daemon"]["settings"], expected);

        let unit = &out["unit"];
        assert_eq!(unit["after"], serde_json::json!(["docker.service"]));
        assert_eq!(unit["requires"], serde_json::json!(["docker.service"]));
        assert_eq!(unit["wantedBy"], serde_json::json!(["multi-user.target"]));
        assert_eq!(unit["path"], serde_json::json!([{ "name": "docker" }]));
        assert_eq!(
            unit["serviceConfig"],
            serde_json::json!({ "Type": "oneshot", "RemainAfterExit": true })
        );
        // No network yet: it is created with exactly the command the tests
        // run on a real dockerd (tests/egress.rs, the rehearsal).
        let script = unit["script"].as_str().unwrap();
        let inspect: Vec<String> = ["docker", "network", "inspect", "appliance"].map(String::from).into();
        let create = network_create(&appliance, host);
        assert_eq!(run_network_script(script, 1), [inspect.clone(), create], "{script}");
        // There already: kept, with its sandboxes attached.
        assert_eq!(run_network_script(script, 0), [inspect], "{script}");
    }

    assert_sets_nothing("modules/docker-gvisor.nix", "{ appliance.docker.enable = false; }");
}

#[test]
fn the_sandboxes_module_runs_each_sandbox_in_docker_after_its_units() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // An image description as generated/images/<name>.json is: its
    // builder and the builder's arguments.
    let image = dir.path().join("picoclaw.json");
    std::fs::write(
        &image,
        r#"{ "image": "picoclaw", "tag": "0.2.9", "packages": ["curl"] }"#,
    )
    .unwrap();
    let config = format!(
        r#"{{ appliance.sandboxes = {{
          bot = {{
            image = "agent-appliance/picoclaw:0.2.9"; imageFile = {image}; user = "1000:1000";
            volumes = [ "v:/data" ]; files."/etc/bot.json" = {image}; environment.HOME = "/data";
            environmentFiles = [ "/s/bot/env" ];
            ports = [ ]; cmd = [ ]; dependsOn = [ "bot-exec" ]; extraOptions = [ "--runtime=runsc" "--read-only" ];
            after = [ "appliance-network.service" ]; requires = [ "appliance-network.service" ]; wants = [ ];
            waitFor = null;
          }};
          far = {{
            image = "agent-appliance/picoclaw:0.2.9"; imageFile = {image}; user = "1000:1000";
            volumes = [ ]; files = {{ }}; environment = {{ }}; environmentFiles = [ "/s/far/env" ]; ports = [ ]; cmd = [ ];
            dependsOn = [ ]; extraOptions = [ ]; after = [ "wg.device" ]; requires = [ "wg.device" ];
            wants = [ "network-online.target" ]; waitFor = "/s/far/env";
          }};
        }}; }}"#,
        image = image.display()
    );
    let out = eval_module(
        "modules/sandboxes.nix",
        &config,
        r#"{
          option = module.options.appliance.sandboxes;
          fields = builtins.attrNames module.options.appliance.sandboxes.type._attrsOf._submodule.options;
          enabled = module.config._if;
          inherit (module.config.content) virtualisation systemd;
        }"#,
    );
    assert_eq!(
        out["fields"],
        serde_json::json!([
            "after",
            "cmd",
            "dependsOn",
            "environment",
            "environmentFiles",
            "extraOptions",
            "files",
            "image",
            "imageFile",
            "ports",
            "requires",
            "user",
            "volumes",
            "waitFor",
            "wants"
        ])
    );
    assert_eq!(out["option"]["default"], serde_json::json!({}));
    assert_eq!(out["enabled"], true);
    let containers = &out["virtualisation"]["oci-containers"];
    assert_eq!(containers["backend"], "docker");
    // Every value as given, each generated file mounted read-only from the
    // store after the volumes, and the image streamed from the store by its
    // description, never pulled.
    let mut bot = containers["containers"]["bot"].clone();
    let volumes = bot["volumes"].as_array().unwrap().clone();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    let file = volumes[1].as_str().unwrap();
    assert!(
        file.starts_with('/') && file.ends_with("-picoclaw.json:/etc/bot.json:ro"),
        "{file}"
    );
    bot["volumes"] = serde_json::json!([volumes[0]]);
    assert_eq!(
        bot,
        serde_json::json!({
            "image": "agent-appliance/picoclaw:0.2.9", "user": "1000:1000", "volumes": ["v:/data"],
            "environment": { "HOME": "/data" }, "environmentFiles": ["/s/bot/env"], "ports": [], "cmd": [],
            "dependsOn": ["bot-exec"], "extraOptions": ["--runtime=runsc", "--read-only"],
            "imageStream": { "builder": "picoclaw", "args": { "tag": "0.2.9", "packages": ["curl"] } },
        })
    );
    // Each unit's ordering; one waiting for its secrets is skipped until
    // the file exists, and its path unit starts it then.
    let services = &out["systemd"]["services"];
    assert_eq!(
        services["docker-bot"],
        serde_json::json!({
            "after": ["appliance-network.service"], "requires": ["appliance-network.service"], "wants": [],
        })
    );
    assert_eq!(
        services["docker-far"],
        serde_json::json!({
            "after": ["wg.device"], "requires": ["wg.device"], "wants": ["network-online.target"],
            "unitConfig": { "ConditionPathExists": "/s/far/env" },
        })
    );
    assert_eq!(
        out["systemd"]["paths"],
        serde_json::json!({ "docker-far": {
            "description": "Start docker-far once /s/far/env exists (its secrets fetched from the hub, docs/pairing.md, or its approval broker's socket, docs/warden.md)",
            "wantedBy": ["multi-user.target"],
            "pathConfig": { "PathExists": "/s/far/env", "Unit": "docker-far.service" },
        } })
    );

    assert_sets_nothing("modules/sandboxes.nix", "{ appliance.sandboxes = { }; }");
}

/// `[backup]` (docs/backup.md): the existing-host example's generated
/// module sets `appliance.backup`, and modules/backup.nix makes of it
/// nixpkgs' restic job: prepare before, cleanup after, the staging
/// directory its one path, the spec's schedule and retention, `pg_dump` on
/// the unit's path, the config installed for `appliance backup`.
#[test]
fn the_backup_module_makes_the_restic_job_of_the_generated_values() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let stub = host_stub();
    let generated = root().join("examples/existing-host/generated");
    let out = eval_json(&format!(
        r#"
let
  lib = import {stub}/module-lib.nix;
  args = import {stub}/args.nix;
  values = ((import {root}/nix/generated.nix {generated}).hosts.ws.module (args // {{
    config.appliance = {{ enable = true; host = "ws"; }};
  }})).config.content.appliance.backup;
  module = import {root}/modules/backup.nix {{
    inherit lib;
    pkgs = {{ restic = {{ name = "restic"; }}; }};
    config = {{
      # The stub lib applies no option defaults: the module's own.
      appliance.backup = values // {{ package = {{ name = "agent-appliance"; }}; configFile = "{generated}/hosts/ws/backup.json"; }};
      services.postgresql = {{ enable = true; package = {{ name = "postgresql"; }}; }};
    }};
  }};
in {{
  options = builtins.attrNames module.options.appliance.backup;
  generatedConfig = builtins.baseNameOf values.configFile;
  enabled = module.config._if;
  config = module.config.content;
}}
"#,
        stub = stub.path().display(),
        generated = generated.display(),
        root = root().display(),
    ));
    assert_eq!(
        out["options"],
        serde_json::json!([
            "configFile",
            "enable",
            "environmentFile",
            "keepDaily",
            "keepMonthly",
            "keepWeekly",
            "package",
            "passwordFile",
            "repository",
            "schedule",
            "stagingDir"
        ])
    );
    assert_eq!(out["generatedConfig"], "backup.json");
    assert_eq!(out["enabled"], true);
    let appliance = "agent-appliance/bin/appliance";
    let config = format!("{}/hosts/ws/backup.json", generated.display());
    assert_eq!(
        out["config"],
        serde_json::json!({
            "environment": {
                "etc": { "appliance/backup.json": { "source": config } },
                "systemPackages": [{ "name": "restic" }, { "name": "postgresql" }],
            },
            "services": { "restic": { "backups": { "appliance": {
                "repository": "sftp:backup@nas.lab.internal:/srv/restic/lab",
                "passwordFile": "/root/backup-password",
                "environmentFile": null,
                "initialize": true,
                "paths": ["/var/lib/appliance/backup/staging"],
                "backupPrepareCommand": format!("{appliance} backup prepare --config {config}"),
                "backupCleanupCommand": format!("{appliance} backup cleanup --config {config}"),
                "timerConfig": { "OnCalendar": "*-*-* 03:30", "Persistent": true, "RandomizedDelaySec": "15m" },
                "pruneOpts": ["--keep-daily 7", "--keep-weekly 4", "--keep-monthly 12"],
            } } } },
            "systemd": { "services": { "restic-backups-appliance": { "path": [{ "name": "restic" }, { "name": "postgresql" }] } } },
            "appliance": { "warden": { "extraArgs": ["--backup-status", "/var/lib/appliance/backup/status.json"] } },
        })
    );
}

/// The generated hosts' SSH keys, firewall and directories, through
/// modules/host.nix: the nixpkgs settings it makes of them, with what a
/// host usually decides itself as defaults.
#[test]
fn the_host_module_makes_key_only_ssh_the_firewall_and_the_directories() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let stub = host_stub();
    let out = eval_json(&format!(
        r#"
let
  args = import {stub}/args.nix;
  values = name: ((import {root}/nix/generated.nix {root}/generated).hosts.${{name}}.module (args // {{
    config.appliance = {{ enable = true; host = name; }};
  }})).config.content.appliance;
  host = name: let v = values name; in (import {root}/modules/host.nix {{
    lib = import {stub}/module-lib.nix;
    config.appliance = {{
      enable = true; host = name;
      # The directories' defaults, which the stub lib leaves to the caller.
      directories = builtins.mapAttrs (_: d: {{ user = "root"; group = "root"; }} // d) v.directories;
      ssh.authorizedKeys = v.ssh.authorizedKeys ++ [ "ssh-ed25519 AAAAC3 admin@laptop" ];
      # The interfaces' defaults, which the stub lib leaves to the caller.
      firewall = v.firewall // {{
        interfaces = builtins.mapAttrs (_: i: {{ allowedTCPPorts = [ ]; allowedUDPPorts = [ ]; }} // i) v.firewall.interfaces;
      }};
    }};
  }});
in {{
  options = builtins.attrNames (host "hub").options.appliance;
  hub = (host "hub").config.content;
  pi = (host "pi").config.content;
  enabled = (host "hub").config._if;
}}
"#,
        stub = stub.path().display(),
        root = root().display(),
    ));
    assert_eq!(out["options"], serde_json::json!(["directories", "firewall", "ssh"]));
    assert_eq!(out["enabled"], true);
    let hub = &out["hub"];
    // Above nixpkgs' defaults, below the host's own name.
    assert_eq!(
        hub["networking"]["hostName"],
        serde_json::json!({ "_override": 900, "value": "hub" })
    );
    // Key-only SSH; root logs in with the spec's keys unless the host says
    // otherwise; passwords off at normal priority.
    assert_eq!(
        hub["services"]["openssh"],
        serde_json::json!({ "enable": true, "settings": {
            "PasswordAuthentication": false, "KbdInteractiveAuthentication": false,
            "PermitRootLogin": { "_default": "prohibit-password" },
        } })
    );
    assert_eq!(
        hub["users"]["users"]["root"]["openssh"]["authorizedKeys"]["keys"],
        serde_json::json!(["ssh-ed25519 AAAAC3 admin@laptop"])
    );
    assert_eq!(
        hub["networking"]["firewall"],
        serde_json::json!({
            "enable": true, "allowedTCPPorts": [22], "allowedUDPPorts": [51820],
            "interfaces": {
                "br-appliance": { "allowedTCPPorts": [53, 3128, 8008], "allowedUDPPorts": [53] },
                "wg-appliance": { "allowedTCPPorts": [8008, 8009, 8080, 11434], "allowedUDPPorts": [] },
            },
        })
    );
    // The tmpfiles rules of the generated directories, to the letter.
    assert_eq!(
        hub["systemd"]["tmpfiles"]["rules"],
        serde_json::json!([
            "d /run/appliance/approval/casper-exec 0750 root 10000 -",
            "d /run/appliance/sockets/casper-exec 0700 root root -",
            "d /var/lib/appliance 0711 root root -",
            "d /var/lib/appliance/secrets 0711 root root -",
            "d /var/lib/appliance/wireguard 0700 root root -",
        ])
    );
    assert_eq!(
        out["pi"]["networking"]["firewall"]["interfaces"],
        serde_json::json!({ "br-appliance": { "allowedTCPPorts": [3128], "allowedUDPPorts": [] } })
    );

    assert_sets_nothing("modules/host.nix", "{ appliance.enable = false; }");
}

#[test]
fn the_nvidia_module_defaults_the_driver_and_refuses_one_nvproxy_lacks() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let config = |driver: &str, toolkit: bool| {
        format!(
            r#"{{ appliance.host = "hub";
              appliance.nvidia = {{ enable = true; package = "dc_590"; supportedVersions = [ "590.48.01" ]; containerToolkit = {toolkit}; }};
              boot.kernelPackages.nvidiaPackages.dc_590 = {{ version = "590.48.01"; }};
              services.xserver.videoDrivers = [ "nvidia" ];
              hardware.nvidia.package.version = "{driver}"; }}"#
        )
    };
    let select = r#"{
      options = builtins.attrNames module.options.appliance.nvidia;
      supported = module.options.appliance.nvidia.supportedVersions.default;
      enabled = module.config._if;
      inherit (module.config.content) hardware services;
      assertions = map (a: { inherit (a) assertion; }) module.config.content.assertions;
      message = (builtins.head module.config.content.assertions).message;
    }"#;
    let out = eval_module("modules/nvidia.nix", &config("590.48.01", true), select);
    assert_eq!(
        out["options"],
        serde_json::json!(["containerToolkit", "enable", "package", "supportedVersions"])
    );
    // Every host's default: the pinned gVisor's nvproxy list, the one
    // `appliance doctor` checks (both from nix/sources.json).
    assert_eq!(
        out["supported"],
        serde_json::json!(agent_appliance::generator::render::NVPROXY_DRIVERS)
    );
    assert_eq!(out["enabled"], true);
    let hardware = &out["hardware"];
    assert_eq!(hardware["graphics"]["enable"], true);
    assert_eq!(
        out["services"]["xserver"]["videoDrivers"],
        serde_json::json!(["nvidia"])
    );
    // nvproxy needs the open kernel module: normal priority.
    assert_eq!(hardware["nvidia"]["open"], true);
    // The host's own driver, persistence daemon and nvidia-settings win.
    assert_eq!(
        hardware["nvidia"]["package"],
        serde_json::json!({ "_default": { "version": "590.48.01" } })
    );
    assert_eq!(
        hardware["nvidia"]["nvidiaPersistenced"],
        serde_json::json!({ "_default": true })
    );
    assert_eq!(
        hardware["nvidia"]["nvidiaSettings"],
        serde_json::json!({ "_default": false })
    );
    assert_eq!(
        hardware["nvidia-container-toolkit"]["enable"],
        serde_json::json!({ "_if": true, "content": true })
    );
    assert_eq!(out["assertions"], serde_json::json!([{ "assertion": true }]));
    // A driver nvproxy does not list (the host's own) fails evaluation.
    let other = eval_module("modules/nvidia.nix", &config("595.45.04", false), select);
    assert_eq!(other["assertions"], serde_json::json!([{ "assertion": false }]));
    assert!(
        other["message"]
            .as_str()
            .unwrap()
            .starts_with("appliance host `hub`: NVIDIA driver 595.45.04 is not on gVisor nvproxy's supported list"),
        "{}",
        other["message"]
    );
    assert_eq!(
        other["hardware"]["nvidia-container-toolkit"]["enable"],
        serde_json::json!({ "_if": false })
    );
    assert_sets_nothing("modules/nvidia.nix", "{ appliance.nvidia.enable = false; }");
}

#[test]
fn the_docker_module_refuses_a_gvisor_older_than_the_minimum() {
    let Some(_) = nix_instantiate() else {
        return;
    };
    let daemon = root().join("generated/hosts/hub/docker-daemon.json");
    let assertions = |minimum: &str| {
        eval_module(
            "modules/docker-gvisor.nix",
            &format!(
                r#"{{ appliance.host = "pi"; appliance.docker = {{ enable = true; daemonSettings = {}; runscMinimum = {minimum}; }}; }}"#,
                daemon.display()
            ),
            "module.config.content.assertions",
        )
    };
    // The stub's gVisor is release 20260406.0.
    assert_eq!(
        assertions(&format!("\"{}\"", agent_appliance::generator::render::RUNSC_MINIMUM))[0]["assertion"],
        true
    );
    let old = assertions("\"20260501.0\"");
    assert_eq!(old[0]["assertion"], false);
    assert_eq!(
        old[0]["message"],
        "appliance host `pi`: gVisor 20260406.0 is older than release-20260501.0; use the flake's overlay (nix/overlay.nix) or pin a newer gvisor."
    );
    assert_eq!(assertions("null"), serde_json::json!([]));
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
