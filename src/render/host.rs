//! The NixOS module of one host: SSH, firewall, Docker with the gVisor
//! runtimes, Synapse, Ollama, the bootstrap units and every sandbox.

use std::collections::BTreeMap;

use anyhow::Result;
use minijinja::Value;
use serde::Serialize;

use super::nix::{self, expr};
use super::templates::Engine;
use super::{STAMP, Tree};
use crate::docker::run_options;
use crate::model::{Appliance, BRIDGE_INTERFACE, BindSource, Host, NETWORK_NAME, SOCKET_DIR, STATE_DIR};
use crate::spec::schema::Target;

/// NixOS release the generated modules are written for.
pub const STATE_VERSION: &str = "26.05";

#[derive(Serialize)]
struct HostContext {
    stamp: &'static str,
    appliance: String,
    host: String,
    target: Value,
    system: Value,
    state_version: &'static str,
    imports: Vec<Value>,
    ssh_keys: Vec<String>,
    firewall: Firewall,
    gpu: Option<crate::model::Gpu>,
    runtimes: Vec<RuntimeNote>,
    network: NetworkCommands,
    tmpfiles: Vec<String>,
    synapse: bool,
    bootstrap: BootstrapCommands,
    ollama: Option<BTreeMap<&'static str, Value>>,
    containers: BTreeMap<String, BTreeMap<&'static str, Value>>,
    container_units: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize)]
struct Firewall {
    tcp: Vec<u16>,
    udp: Vec<u16>,
    interfaces: BTreeMap<String, BTreeMap<&'static str, Vec<u16>>>,
}

#[derive(Serialize)]
struct RuntimeNote {
    name: String,
    reasons: Vec<&'static str>,
}

#[derive(Serialize)]
struct NetworkCommands {
    inspect: Value,
    create: Vec<String>,
}

#[derive(Serialize)]
struct BootstrapCommands {
    secrets: Vec<Value>,
    all: Vec<Value>,
}

pub fn render(appliance: &Appliance, host: &Host, engine: &Engine, tree: &mut Tree) -> Result<()> {
    let mut imports = Vec::new();
    if host.target == Target::Gce {
        imports.push(expr("\"${modulesPath}/virtualisation/google-compute-config.nix\""));
    }

    let mut firewall = Firewall {
        tcp: Vec::new(),
        udp: Vec::new(),
        interfaces: BTreeMap::new(),
    };
    for rule in &host.firewall {
        let list = match &rule.interface {
            None if rule.protocol == "udp" => &mut firewall.udp,
            None => &mut firewall.tcp,
            Some(interface) => {
                let key = if rule.protocol == "udp" {
                    "allowedUDPPorts"
                } else {
                    "allowedTCPPorts"
                };
                firewall
                    .interfaces
                    .entry(interface.clone())
                    .or_default()
                    .entry(key)
                    .or_default()
            }
        };
        list.push(rule.port);
    }

    let mut tmpfiles = vec![
        format!("d {STATE_DIR} 0711 root root -"),
        format!("d {STATE_DIR}/secrets 0711 root root -"),
    ];
    let mut containers = BTreeMap::new();
    let mut container_units = BTreeMap::new();
    for sandbox in &host.sandboxes {
        let options = run_options(sandbox);
        let mut volumes: Vec<Value> = options.volumes.iter().map(|v| Value::from(v.as_str())).collect();
        for bind in &options.binds {
            let suffix = if bind.read_only { ":ro" } else { "" };
            let target = nix::string_content(&format!(":{}{suffix}", bind.target));
            volumes.push(match &bind.source {
                // Generated files are copied into the store by the path literal.
                BindSource::Generated(path) => expr(format!("\"${{../../{path}}}{target}\"")),
                BindSource::Host(path) => {
                    if path.starts_with(SOCKET_DIR) {
                        tmpfiles.push(format!("d {path} 0700 root root -"));
                    }
                    Value::from(format!("{path}:{}{suffix}", bind.target))
                }
            });
        }
        let image_file = sandbox
            .image
            .split(':')
            .next()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default();
        let mut container = BTreeMap::new();
        container.insert("image", Value::from(sandbox.image.as_str()));
        container.insert(
            "imageStream",
            expr(format!("import ../../images/{image_file}.nix {{ inherit pkgs lib; }}")),
        );
        container.insert("user", Value::from(options.user.as_str()));
        container.insert("volumes", Value::from(volumes));
        container.insert("environment", nix::value(&options.environment));
        container.insert("environmentFiles", nix::value(&options.env_files));
        container.insert("ports", nix::value(&options.ports));
        container.insert("cmd", nix::value(&options.command));
        container.insert("dependsOn", nix::value(&sandbox.depends_on));
        container.insert("extraOptions", nix::value(&options.flags));
        containers.insert(sandbox.name.clone(), container);

        let mut deps = vec!["appliance-network.service".to_string()];
        if host.runs_matrix {
            deps.push("appliance-bootstrap.service".to_string());
        }
        container_units.insert(format!("docker-{}", sandbox.name), deps);
    }
    tmpfiles.sort();
    tmpfiles.dedup();

    let plan = expr("\"${../../bootstrap/plan.json}\"");
    let appliance_bin = expr("lib.getExe pkgs.agent-appliance");
    let bootstrap = BootstrapCommands {
        secrets: vec![
            appliance_bin.clone(),
            Value::from("bootstrap"),
            Value::from("--plan"),
            plan.clone(),
            Value::from("--secrets-only"),
        ],
        all: vec![appliance_bin, Value::from("bootstrap"), Value::from("--plan"), plan],
    };

    let ollama = appliance
        .inference
        .as_ref()
        .filter(|_| host.runs_inference)
        .map(|inference| {
            let mut settings = BTreeMap::new();
            let package = if inference.acceleration == "cuda" {
                "pkgs.ollama-cuda"
            } else {
                "pkgs.ollama-cpu"
            };
            settings.insert("package", expr(package));
            settings.insert("host", Value::from(inference.bind_address.to_string()));
            settings.insert("port", Value::from(inference.port));
            settings.insert("models", nix::value(&inference.models));
            settings
        });

    let network = NetworkCommands {
        inspect: Value::from(format!("docker network inspect {NETWORK_NAME}")),
        create: vec![
            "docker".into(),
            "network".into(),
            "create".into(),
            "--driver=bridge".into(),
            format!("--subnet={}", appliance.network),
            format!("--gateway={}", host.network_address),
            format!("--opt=com.docker.network.bridge.name={BRIDGE_INTERFACE}"),
            NETWORK_NAME.into(),
        ],
    };

    let context = HostContext {
        stamp: STAMP,
        appliance: appliance.name.clone(),
        host: host.name.clone(),
        target: nix::value(host.target),
        system: nix::value(host.system),
        state_version: STATE_VERSION,
        imports,
        ssh_keys: host.ssh_keys.clone(),
        firewall,
        gpu: host.gpu.clone(),
        runtimes: host
            .runtimes
            .iter()
            .map(|p| RuntimeNote {
                name: p.name(),
                reasons: p.reasons(),
            })
            .collect(),
        network,
        tmpfiles,
        synapse: host.runs_matrix,
        bootstrap,
        ollama,
        containers,
        container_units,
    };
    let text = engine.render("host.nix.j2", &context)?;
    tree.insert(format!("hosts/{}/default.nix", host.name), text.into_bytes());
    Ok(())
}
