//! The appliance network and the overlay between hosts, and where each
//! sandbox reaches Matrix and Ollama from its host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use toml::Spanned;

use super::{Builder, span};
use crate::generator::model::services::INFERENCE_SLOT;
use crate::generator::model::{Host, Subnet};
use crate::generator::spec::Spec;
use crate::generator::spec::schema::InferenceSandbox;

const DEFAULT_NETWORK: &str = "10.88.0.0/16";
const DEFAULT_OVERLAY: &str = "10.89.0.0/24";
const MATRIX_PORT: u16 = 8008;
const OLLAMA_PORT: u16 = 11434;

/// The sandboxes' network, and the overlay when more than one host is used.
pub(super) fn network_and_overlay(b: &mut Builder) -> (Subnet, Option<Subnet>) {
    let spec = b.spec;
    let network = subnet(b, spec.appliance.network.as_ref(), DEFAULT_NETWORK);
    let multi_host = {
        let mut used: BTreeSet<&str> = spec.agents.values().map(|a| a.host.get_ref().as_str()).collect();
        used.insert(spec.matrix.get_ref().host.get_ref());
        if let Some(inference) = &spec.inference {
            used.insert(inference.get_ref().host.get_ref());
        }
        used.len() > 1
    };
    // Parsed even for one host, so a bad value is reported before it is used.
    let overlay_subnet = subnet(b, spec.appliance.overlay.as_ref(), DEFAULT_OVERLAY);
    let overlay = multi_host.then_some(overlay_subnet);
    if let Some(overlay) = &overlay
        && overlaps(&network, overlay)
    {
        let (at, hint) = match (&spec.appliance.overlay, &spec.appliance.network) {
            (Some(text), _) => (span(text), "pick two disjoint private ranges".to_string()),
            (None, Some(text)) => (
                span(text),
                format!("the overlay defaults to `{DEFAULT_OVERLAY}`; pick another `network` or set `overlay`"),
            ),
            (None, None) => (
                span(&spec.appliance.name),
                "set `overlay` to another private range".to_string(),
            ),
        };
        b.error(
            at,
            format!("overlay `{overlay}` overlaps the appliance network `{network}`"),
            hint,
        );
    }
    (network, overlay)
}

fn subnet(b: &mut Builder, text: Option<&Spanned<String>>, default: &str) -> Subnet {
    match text {
        None => Subnet::parse(default).expect("default subnet is valid"),
        Some(text) => Subnet::parse(text.get_ref()).unwrap_or_else(|problem| {
            b.error(span(text), problem, "use a private IPv4 range such as `10.88.0.0/16`");
            Subnet::parse(default).expect("default subnet is valid")
        }),
    }
}

fn overlaps(a: &Subnet, b: &Subnet) -> bool {
    let end = |s: &Subnet| u32::from(s.base) + (s.size() - 1);
    u32::from(a.base) <= end(b) && u32::from(b.base) <= end(a)
}

/// Where Matrix and Ollama run and listen, as the sandboxes reach them.
pub(super) struct Endpoints {
    pub matrix_host: String,
    pub matrix_port: u16,
    pub inference_host: Option<String>,
    pub inference_port: u16,
    /// Where the inference host's own sandboxes reach Ollama, when its host
    /// exists: the inference sandbox's fixed address, or in host mode the
    /// one address the host service listens on.
    pub inference_address: Option<Ipv4Addr>,
    /// Where other hosts' agents reach Ollama: the inference host's overlay
    /// address, when any agent is on another host.
    pub inference_overlay: Option<Ipv4Addr>,
    pub inference_mode: InferenceSandbox,
    network: Subnet,
    /// Each host's overlay address, for services on another host.
    overlay_addresses: BTreeMap<String, Option<Ipv4Addr>>,
}

impl Endpoints {
    pub fn new(spec: &Spec, hosts: &BTreeMap<String, Host>, network: Subnet) -> Endpoints {
        let matrix_spec = spec.matrix.get_ref();
        let inference_spec = spec.inference.as_ref().map(|i| i.get_ref());
        let inference_host = inference_spec.map(|i| i.host.get_ref().clone());
        // Ollama takes one listen address: the overlay address when agents on
        // other hosts use it (local sandboxes reach it through the bridge, as a
        // local address of the host), the bridge address otherwise. Every agent
        // uses that one address.
        let remote_inference = inference_host
            .as_ref()
            .is_some_and(|ih| spec.agents.values().any(|a| a.host.get_ref() != ih));
        let inference_mode = inference_spec
            .and_then(|i| i.sandbox.as_ref())
            .map_or(InferenceSandbox::Gvisor, |s| *s.get_ref());
        let inference_host_model = inference_host.as_ref().and_then(|ih| hosts.get(ih));
        let inference_overlay = inference_host_model
            .filter(|_| remote_inference)
            .and_then(|host| host.overlay_address);
        let inference_address = inference_host_model.map(|host| match inference_mode {
            // The sandbox has its own address on the bridge; other hosts
            // reach it through a port published on the overlay address.
            InferenceSandbox::Gvisor => network
                .host(INFERENCE_SLOT)
                .expect("every appliance subnet has room for the service slots"),
            InferenceSandbox::Host if remote_inference => host.overlay_address.unwrap_or(network.gateway()),
            InferenceSandbox::Host => network.gateway(),
        });
        Endpoints {
            matrix_host: matrix_spec.host.get_ref().clone(),
            matrix_port: matrix_spec.port.as_ref().map_or(MATRIX_PORT, |p| *p.get_ref()),
            inference_host,
            inference_port: inference_spec
                .and_then(|i| i.port.as_ref())
                .map_or(OLLAMA_PORT, |p| *p.get_ref()),
            inference_address,
            inference_overlay,
            inference_mode,
            network,
            overlay_addresses: hosts.iter().map(|(n, h)| (n.clone(), h.overlay_address)).collect(),
        }
    }

    /// The address a sandbox on host `from` reaches Ollama at.
    pub fn inference_address_from(&self, from: &str) -> Option<Ipv4Addr> {
        let inference_host = self.inference_host.as_deref()?;
        match self.inference_mode {
            InferenceSandbox::Gvisor if from != inference_host => self.inference_overlay,
            _ => self.inference_address,
        }
    }

    /// The address a sandbox on host `from` reaches a service on `to` at.
    pub fn address_from(&self, from: &str, to: &str) -> Option<Ipv4Addr> {
        if from == to {
            Some(self.network.gateway())
        } else {
            self.overlay_addresses.get(to).copied().flatten()
        }
    }
}
