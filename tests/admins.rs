//! What the human admins get on the Matrix host: the web client (Cinny
//! behind nginx, modules/webclient.nix from the generated values)
//! evaluated with stub `lib` and `pkgs`, for
//! its Cinny config and listen addresses, in every spec; and that nothing
//! else in the firewall opens its port.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::support::{eval_json, nix_instantiate, root};

/// The web client's settings for its own host, as modules/webclient.nix
/// and modules/bootstrap.nix make them from the host's generated values.
fn evaluate(tree: &std::path::Path, host: &str) -> Value {
    eval_json(&format!(
        r#"
let
  lib = {{
    mkIf = cond: content: {{ inherit cond content; }};
    mkDefault = value: value;
    types = {{ listOf = t: t; submodule = m: m; strMatching = r: r; str = "str"; port = "port"; path = "path"; }};
    mkOption = o: o; mkEnableOption = d: d; mkPackageOption = _: _: _: {{ }};
    getExe = p: "/bin/${{p}}";
  }};
  pkgs = {{ cinny.override = args: {{ cinnyOverride = args; }}; agent-appliance = "agent-appliance"; }};
  generated = (import {root}/nix/generated.nix {tree}).hosts.{host}.module {{
    config.appliance = {{ enable = true; host = "{host}"; }};
    inherit lib pkgs;
  }};
  values = generated.config.content.appliance;
  module = name: import {root}/modules/${{name}}.nix {{
    # The options' defaults, which the stub lib leaves to the caller.
    config.appliance = values // {{
      bootstrap = values.bootstrap // {{ package = pkgs.agent-appliance; }};
      webClient = {{ wants = [ ]; }} // values.webClient;
    }};
    inherit lib pkgs;
    utils.escapeSystemdExecArgs = args: args;
  }};
  c = (module "webclient").config.content;
  admin = (module "bootstrap").config.content;
in {{
  enabled = generated.config.cond && (module "webclient").config.cond;
  vhost = c.services.nginx.virtualHosts.appliance-web-client;
  nginx = c.services.nginx.enable;
  units = c.systemd.services.nginx;
  hasPlan = admin.environment.etc ? "appliance/bootstrap-plan.json";
  tools = admin.environment.systemPackages;
}}"#,
        tree = tree.display(),
        root = root().display(),
    ))
}

#[test]
fn the_web_client_is_cinny_locked_to_the_homeserver_on_loopback_and_the_overlay_only() {
    if nix_instantiate().is_none() {
        return;
    }
    for spec in [
        "appliance.toml",
        "examples/minimal/appliance.toml",
        "examples/edge-pi/appliance.toml",
        "examples/existing-host/appliance.toml",
    ] {
        let path = root().join(spec);
        let appliance = agent_appliance::operator::commands::load(&path).unwrap();
        let hub = &appliance.hosts[&appliance.matrix.host];
        let got = evaluate(&path.parent().unwrap().join("generated"), &hub.name);
        assert_eq!(got["enabled"], json!(true), "{spec}");
        assert_eq!(got["nginx"], json!(true), "{spec}");
        // `appliance admin password` and its plan.
        assert_eq!(got["hasPlan"], json!(true), "{spec}");
        assert_eq!(got["tools"], json!(["agent-appliance"]), "{spec}");

        // Loopback always (for `ssh -L`), the overlay address when hosts are
        // linked, nothing else: never a wildcard or a public address.
        let mut expected = vec![json!({"addr": "127.0.0.1", "port": 8080})];
        if let Some(overlay) = hub.overlay_address {
            expected.push(json!({"addr": overlay.to_string(), "port": 8080}));
        }
        assert_eq!(got["vhost"]["listen"], Value::from(expected.clone()), "{spec}");
        for listen in expected {
            let addr: Ipv4Addr = listen["addr"].as_str().unwrap().parse().unwrap();
            assert!(
                addr.is_loopback() || Some(addr) == hub.overlay_address,
                "{spec}: {addr}"
            );
        }

        // Cinny offers only this homeserver, as the browser reaches it
        // through the same origin, and no other server can be typed in.
        let conf = &got["vhost"]["root"]["cinnyOverride"]["conf"];
        assert_eq!(conf["allowCustomHomeservers"], json!(false), "{spec}");
        assert_eq!(conf["defaultHomeserver"], json!(0), "{spec}");
        let servers: Vec<&str> = crate::support::json_strings(&conf["homeserverList"]);
        let origins: Vec<String> = got["vhost"]["listen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| format!("http://{}:{}", l["addr"].as_str().unwrap(), l["port"]))
            .collect();
        assert_eq!(servers, origins, "{spec}");
        // The Matrix API is proxied to Synapse on loopback at the same origin.
        let synapse = json!(format!("http://127.0.0.1:{}", appliance.matrix.port));
        assert_eq!(got["vhost"]["locations"]["/_matrix/"]["proxyPass"], synapse, "{spec}");
        assert_eq!(
            got["vhost"]["locations"]["/"]["tryFiles"],
            json!("$uri $uri/ /index.html"),
            "{spec}"
        );
        // With an overlay, nginx waits for its interface (it binds the address).
        let after = got["units"]["after"].to_string();
        assert_eq!(
            after.contains("wg\\\\x2dappliance"),
            hub.overlay_address.is_some(),
            "{spec}: {after}"
        );

        // The firewall opens the client's port on the overlay only, never
        // on every interface.
        for rule in hub.firewall.iter().filter(|r| r.port == 8080) {
            assert_eq!(rule.interface.as_deref(), Some("wg-appliance"), "{spec}");
        }
        assert_eq!(
            hub.firewall.iter().any(|r| r.port == 8080),
            hub.overlay_address.is_some(),
            "{spec}"
        );
    }
}
