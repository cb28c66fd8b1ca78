//! The appliance's own services in gVisor sandboxes: Ollama (`[inference]
//! sandbox = "gvisor"`, the default), and SearXNG and webextract for the
//! `crawler` tool (`[crawler] backend = "searxng"` and `extract =
//! "webextract"`, the defaults). Their only secrets are their own keys, from
//! env files the host makes; they run as their image's non-root account
//! with no capabilities and a read-only root, and sit at fixed addresses on
//! the bridge below the agents' (`.10` on).

use std::collections::BTreeMap;

use super::egress::{self, Egress};
use super::image::{self, Storage};
use super::sandbox::resolver_bind;
use super::{Bind, BindSource, Gpu, Inference, Sandbox, SandboxNetwork, Size, Tmpfs, Volume};
use crate::generator::model::network::Subnet;
use crate::generator::runsc::Profile;

/// The inference sandbox's host number on the appliance network (`.2`).
pub const INFERENCE_SLOT: u32 = 2;
/// The inference sandbox's container name.
pub const INFERENCE_SANDBOX: &str = "ollama";

/// Where Ollama pulls models from, for the egress proxy's allowlist: its
/// registry, which redirects blob downloads to its storage host (Cloudflare
/// R2; the redirect target is not verified from here).
pub const OLLAMA_REGISTRY_DOMAINS: &[&str] = &["*.r2.cloudflarestorage.com", "registry.ollama.ai"];

/// Ollama's egress: its registry only, through the egress proxy.
pub fn inference_egress() -> Egress {
    Egress::Domains(OLLAMA_REGISTRY_DOMAINS.iter().map(|d| d.to_string()).collect())
}

/// The search sandbox's host number on the appliance network (`.3`).
pub const SEARCH_SLOT: u32 = 3;
pub const SEARCH_PORT: u16 = 8080;
pub const SEARCH_SANDBOX: &str = "searxng";
/// SearXNG's settings, generated (`render::services`).
pub const SEARCH_SETTINGS: &str = "services/searxng/settings.yml";
/// Where the host keeps SearXNG's secret key (`SEARXNG_SECRET=`), made at
/// first boot; it signs SearXNG's own URLs and never leaves the host.
pub const SEARCH_SECRET_ENV: &str = "/var/lib/appliance/secrets/searxng/env";

/// The extraction sandbox's host number on the appliance network (`.4`).
pub const EXTRACT_SLOT: u32 = 4;
pub const EXTRACT_PORT: u16 = 8090;
pub const EXTRACT_SANDBOX: &str = "webextract";
/// Where the host keeps webextract's key (`TAVILY_API_KEY=`), made at first
/// boot. The service checks it and its clients (the agents with the
/// `crawler` tool on this host) send it; Hermes reads it under that name.
pub const EXTRACT_KEY_ENV: &str = "/var/lib/appliance/secrets/webextract/env";

/// A service sandbox of the `crawler` tool: strict, on the appliance
/// network at its fixed host number (`slot`), reaching the web through the
/// egress proxy.
fn web_service(name: &str, purpose: String, layout: &image::ImageLayout, network: &Subnet, slot: u32) -> Sandbox {
    let address = network
        .host(slot)
        .expect("every appliance subnet has the service slots");
    Sandbox {
        tmpfs: tmpfs_of(layout),
        network: Some(SandboxNetwork::bridge(address, network)),
        egress: Egress::Web,
        reach: egress::code_reach(network.gateway(), &Egress::Web),
        ..Sandbox::strict(name.to_string(), purpose, layout, Profile::STRICT)
    }
}

/// webextract for the agents in `clients` (those with the `crawler` tool):
/// like SearXNG's, strict runtime, non-root, no capabilities, read-only
/// root, no volume; it fetches pages through the egress proxy.
pub fn extract_sandbox(host: &str, clients: &[String], network: &Subnet) -> Sandbox {
    let layout = image::webextract();
    let mut environment = BTreeMap::from([
        // Every address of the sandbox's own netstack: only its bridge address.
        ("WEBEXTRACT_ADDRESS".to_string(), "0.0.0.0".to_string()),
        ("WEBEXTRACT_PORT".to_string(), EXTRACT_PORT.to_string()),
    ]);
    // Python's urllib honours HTTP(S)_PROXY: every page through the proxy.
    environment.extend(egress::proxy_environment(network.gateway(), &[], None));
    let purpose = format!(
        "appliance-webextract, the `crawler` tool's page extraction backend (web_extract) for {}",
        clients.join(", ")
    );
    Sandbox {
        binds: vec![resolver_bind(host)],
        environment,
        env_files: vec![EXTRACT_KEY_ENV.to_string()],
        // The pages the agents ask for: the web, through the egress proxy.
        ..web_service(EXTRACT_SANDBOX, purpose, layout, network, EXTRACT_SLOT)
    }
}

/// SearXNG for the agents in `clients` (those with the `crawler` tool):
/// strict runtime, non-root, no capabilities, read-only root, no volume.
pub fn search_sandbox(host: &str, clients: &[String], network: &Subnet) -> Sandbox {
    let layout = image::searxng();
    let purpose = format!(
        "SearXNG, the `crawler` tool's search backend for {}",
        clients.join(", ")
    );
    Sandbox {
        binds: vec![
            Bind {
                source: BindSource::Generated(SEARCH_SETTINGS.to_string()),
                target: "/etc/searxng/settings.yml".to_string(),
                read_only: true,
            },
            resolver_bind(host),
        ],
        pids_limit: 1024,
        memory: Size::gib(1),
        environment: {
            let mut env = BTreeMap::from([(
                "SEARXNG_SETTINGS_PATH".to_string(),
                "/etc/searxng/settings.yml".to_string(),
            )]);
            // The settings name the proxy for SearXNG's engines too.
            env.extend(egress::proxy_environment(network.gateway(), &[], None));
            env
        },
        env_files: vec![SEARCH_SECRET_ENV.to_string()],
        // Its engines are public search services: the web, through the
        // egress proxy.
        ..web_service(SEARCH_SANDBOX, purpose, layout, network, SEARCH_SLOT)
    }
}

/// The image's tmpfs-backed directories (root-owned, like /tmp).
fn tmpfs_of(layout: &image::ImageLayout) -> Vec<Tmpfs> {
    layout
        .writable
        .iter()
        .filter_map(|w| match w.storage {
            Storage::Tmpfs { size } => Some(Tmpfs {
                target: w.path.to_string(),
                size,
                mode: w.mode_octal(),
                owner: None,
                exec: w.exec,
            }),
            _ => None,
        })
        .collect()
}

/// Ollama's sandbox: CUDA and nvproxy on a GPU host, strict otherwise.
pub fn inference_sandbox(inference: &Inference, gpu: Option<&Gpu>, network: &Subnet) -> Sandbox {
    let layout = image::ollama(gpu.is_some());
    let profile = Profile {
        // Only the spec's driver capabilities (compute, utility by default).
        gpu: gpu.map(|g| g.driver_capabilities.clone()),
        ..Profile::STRICT
    };
    let mut environment = BTreeMap::from([
        ("HOME".to_string(), layout.account.home.to_string()),
        // Every address of the sandbox's own netstack: only its bridge
        // address exists there.
        ("OLLAMA_HOST".to_string(), format!("0.0.0.0:{}", inference.port)),
    ]);
    // Model pulls go through the egress proxy (Go honours HTTPS_PROXY).
    let egress = inference_egress();
    environment.extend(egress::proxy_environment(network.gateway(), &[], None));
    Sandbox {
        tmpfs: tmpfs_of(layout),
        volumes: layout
            .volumes()
            .map(|(name, w)| Volume {
                name: format!("appliance-{INFERENCE_SANDBOX}-{name}"),
                target: w.path.to_string(),
                read_only: false,
            })
            .collect(),
        // Its resolver: Ollama looks up its registry.
        binds: vec![resolver_bind(&inference.host)],
        // Ollama's runners are threads of one or a few processes; every
        // guest thread is a host task (see `MIN_PIDS`), and the sentry's
        // threads grow with the host's CPUs.
        pids_limit: 4096,
        // On a GPU host Ollama reads each model into host memory on its way
        // to VRAM (the demo's largest is 89 GB); on a CPU host the weights
        // stay in this memory.
        memory: if gpu.is_some() { Size::gib(128) } else { Size::gib(16) },
        // GPU inference needs a few CPU threads; CPU inference all a Pi has.
        cpus: if gpu.is_some() { "8".into() } else { "4".into() },
        environment,
        network: Some(SandboxNetwork::bridge(inference.bind_address, network)),
        reach: egress::code_reach(network.gateway(), &egress),
        egress,
        // Other hosts' agents come over the overlay: the port is published
        // on the overlay address only, never on the host's other addresses.
        publish: inference.overlay_address.map(|_| inference.port).into_iter().collect(),
        publish_on: inference.overlay_address,
        gpus: gpu.is_some(),
        ..Sandbox::strict(
            INFERENCE_SANDBOX.to_string(),
            format!(
                "Ollama ({}) serving {}",
                inference.acceleration,
                inference.models.join(", ")
            ),
            layout,
            profile,
        )
    }
}
