//! `[hosts.*]`: target and system, GPU, SSH and WireGuard keys, and each
//! host's addresses on the network and the overlay.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{Builder, span};
use crate::generator::model::names::{endpoint_problem, gpu_model_problem, ssh_key_problem};
use crate::generator::model::vram;
use crate::generator::model::{Gpu, Host, Size, Subnet};
use crate::generator::spec::schema::{DriverCapability, GpuSpec, HostSpec, Platform, System, Target};

pub(super) fn resolve(b: &mut Builder, network: Subnet, overlay: Option<Subnet>) -> BTreeMap<String, Host> {
    let spec = b.spec;
    if spec.hosts.is_empty() {
        b.error(
            span(&spec.appliance.name),
            "the spec declares no host",
            "add a host such as `[hosts.hub]` with `target = \"gce\"`",
        );
    }
    let mut hosts = BTreeMap::new();
    check_wireguard_keys_unique(b);
    for (index, (name, host)) in spec.hosts.iter().enumerate() {
        let resolved = resolve_host(b, name, host, network, overlay, index);
        hosts.insert(name.get_ref().clone(), resolved);
    }
    hosts
}

/// A WireGuard key names one peer: two hosts with the same key would each
/// take the other's traffic (and the spec copied a key by mistake).
fn check_wireguard_keys_unique(b: &mut Builder) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let spec = b.spec;
    let mut keyed: Vec<_> = spec
        .hosts
        .iter()
        .filter_map(|(name, host)| Some((name, host.wireguard_public_key.as_ref()?)))
        .collect();
    // In the order written, so the second one written is the one reported.
    keyed.sort_by_key(|(_, key)| key.span().start);
    for (name, key) in keyed {
        if let Some(first) = seen.insert(key.get_ref(), name.get_ref()) {
            b.error(
                span(key),
                format!(
                    "host `{}` has the WireGuard public key of host `{first}`",
                    name.get_ref()
                ),
                "each host makes its own key at first boot; copy this host's from `wg pubkey` on it (docs/pairing.md)",
            );
            seen.insert(key.get_ref(), first);
        }
    }
}

fn resolve_host(
    b: &mut Builder,
    name: &Spanned<String>,
    host: &HostSpec,
    network: Subnet,
    overlay: Option<Subnet>,
    index: usize,
) -> Host {
    b.check_name("host", name);
    let target = *host.target.get_ref();
    let system = system(b, name, host, target);
    let gpu = host.gpu.as_ref().and_then(|gpu| resolve_gpu(b, name, gpu, target));
    check_ssh_keys(b, host);
    check_endpoint(b, host.endpoint.as_ref());
    if let Some(key) = &host.wireguard_public_key
        && !is_wireguard_key(key.get_ref())
    {
        b.error(
            span(key),
            "this is not a WireGuard public key",
            "use the 44-character base64 key that `wg pubkey` prints on that host",
        );
    }
    let overlay_address = overlay.and_then(|o| o.host(index as u32 + 1));
    if let Some(overlay) = overlay.filter(|_| overlay_address.is_none()) {
        let at = b.spec.appliance.overlay.as_ref().map_or_else(|| span(name), span);
        b.error(
            at,
            format!(
                "the overlay `{overlay}` has no address left for host `{}`",
                name.get_ref()
            ),
            "use a larger subnet in `[appliance].overlay`",
        );
    }
    Host {
        name: name.get_ref().clone(),
        target,
        system,
        platform: host.platform.as_ref().map_or(Platform::Systrap, |p| *p.get_ref()),
        gpu,
        ssh_keys: host.ssh_keys.iter().map(|k| k.get_ref().clone()).collect(),
        network_address: network.gateway(),
        overlay_address,
        wireguard_public_key: host.wireguard_public_key.as_ref().map(|k| k.get_ref().clone()),
        endpoint: host.endpoint.as_ref().map(|e| e.get_ref().clone()),
        firewall: Vec::new(),
        runtimes: Vec::new(),
        sandboxes: Vec::new(),
        runs_matrix: false,
        runs_inference: false,
    }
}

/// GCE is x86_64 and the Pi aarch64; only existing NixOS hosts choose.
fn system(b: &mut Builder, name: &Spanned<String>, host: &HostSpec, target: Target) -> System {
    match (target, &host.system) {
        (Target::Gce, None) => System::X86_64Linux,
        (Target::Rpi4, None) => System::Aarch64Linux,
        (Target::Nixos, None) => System::X86_64Linux,
        (Target::Nixos, Some(system)) => *system.get_ref(),
        (_, Some(system)) => {
            b.error(
                span(system),
                format!("host `{}` sets `system`, but its target fixes it", name.get_ref()),
                "remove `system`; only `target = \"nixos\"` hosts choose their system",
            );
            *system.get_ref()
        }
    }
}

fn resolve_gpu(b: &mut Builder, name: &Spanned<String>, gpu: &Spanned<GpuSpec>, target: Target) -> Option<Gpu> {
    if target == Target::Rpi4 {
        b.error(
            span(gpu),
            format!(
                "host `{}` is a Raspberry Pi 4, which has no GPU gVisor can pass through",
                name.get_ref()
            ),
            "remove `gpu`; serve models from a GPU host and let the Pi's agents use it over the overlay",
        );
        return None;
    }
    let gpu = gpu.get_ref();
    if let Some(problem) = gpu_model_problem(gpu.model.get_ref()) {
        b.error(
            span(&gpu.model),
            format!("GPU model {:?} {problem}", gpu.model.get_ref()),
            "use NVIDIA's short name, such as `l4`, `a100` or `rtx-6000-ada`; set `vram` if the VRAM check does not know it",
        );
    }
    if *gpu.count.get_ref() == 0 {
        b.error(
            span(&gpu.count),
            "GPU count is 0",
            "remove `gpu` or give a count of at least 1",
        );
    }
    let mut capabilities: Vec<DriverCapability> = match &gpu.driver_capabilities {
        Some(list) if list.is_empty() => {
            b.error(
                span(&gpu.count),
                "`driver-capabilities` is empty, so no GPU work could run",
                "remove `driver-capabilities` for the default (compute, utility), or list what is needed",
            );
            Vec::new()
        }
        Some(list) => list.iter().map(|c| *c.get_ref()).collect(),
        None => vec![DriverCapability::Compute, DriverCapability::Utility],
    };
    capabilities.sort();
    capabilities.dedup();
    let vram = match &gpu.vram {
        Some(text) => {
            let message = format!("`vram = \"{}\"` is not a size", text.get_ref());
            b.size(text, message, "write the memory of one GPU like `24g`")
                .map(Size::bytes)
        }
        None => vram::known_gpu(gpu.model.get_ref()),
    };
    Some(Gpu {
        vendor: "nvidia".into(),
        model: gpu.model.get_ref().clone(),
        count: *gpu.count.get_ref(),
        vram,
        driver_capabilities: capabilities,
    })
}

fn check_ssh_keys(b: &mut Builder, host: &HostSpec) {
    for key in &host.ssh_keys {
        if let Some(problem) = ssh_key_problem(key.get_ref()) {
            b.error(
                span(key),
                format!("this is not an SSH public key: it {problem}"),
                "paste one line of `~/.ssh/id_ed25519.pub`, e.g. `ssh-ed25519 AAAA... you@laptop`",
            );
        }
    }
}

fn check_endpoint(b: &mut Builder, endpoint: Option<&Spanned<String>>) {
    if let Some(endpoint) = endpoint
        && let Some(problem) = endpoint_problem(endpoint.get_ref())
    {
        b.error(
            span(endpoint),
            format!("`endpoint = {:?}` {problem}", endpoint.get_ref()),
            "write where other hosts reach this one's WireGuard port: `hub.example.org`, `203.0.113.10:51820` or `[2001:db8::1]:51820`",
        );
    }
}

fn is_wireguard_key(key: &str) -> bool {
    key.len() == 44
        && key.ends_with('=')
        && key[..43]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}
