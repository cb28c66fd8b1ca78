//! `[inference]`: Ollama's host and models.

use std::collections::{BTreeMap, BTreeSet};

use super::addressing::Endpoints;
use super::{Builder, span};
use crate::generator::model::names::model_problem;
use crate::generator::model::services::INFERENCE_SANDBOX;
use crate::generator::model::{Acceleration, Host, Inference, Subnet, Warning, vram};
use crate::generator::spec::Spec;
use crate::generator::spec::schema::{InferenceSandbox, InferenceSpec};

/// The models Ollama serves, each checked once.
pub(super) fn models(b: &mut Builder) -> BTreeSet<String> {
    let mut models = BTreeSet::new();
    let Some(inference) = b.spec.inference.as_ref() else {
        return models;
    };
    let inference_spec = inference.get_ref();
    b.known_host("inference", &inference_spec.host);
    if inference_spec.models.is_empty() {
        b.error(
            span(inference),
            "inference serves no model",
            "list at least one Ollama model in `models`",
        );
    }
    for model in &inference_spec.models {
        if let Some(problem) = model_problem(model.get_ref()) {
            b.error(
                span(model),
                format!("model `{}` {problem}", model.get_ref()),
                "copy the name from `ollama list`",
            );
        }
        if !models.insert(model.get_ref().clone()) {
            b.error(
                span(model),
                format!("model `{}` is listed twice", model.get_ref()),
                "remove the duplicate",
            );
        }
    }
    check_sizes(b, inference_spec, &models);
    models
}

/// `[inference.sizes]`: sizes, of models Ollama serves.
fn check_sizes(b: &mut Builder, inference: &InferenceSpec, models: &BTreeSet<String>) {
    for (model, size) in &inference.sizes {
        if !models.contains(model.get_ref()) {
            b.error(
                span(model),
                format!(
                    "`sizes` names model `{}`, which `models` does not list",
                    model.get_ref()
                ),
                "remove it, or add the model to `models`",
            );
        }
        let message = format!("`{}` is not a size", size.get_ref());
        b.size(
            size,
            message,
            "write what the model needs loaded, as `ollama ps` shows it, like `44g`",
        );
    }
}

/// Ollama as the model has it, when its host exists.
pub(super) fn resolve(
    spec: &Spec,
    hosts: &BTreeMap<String, Host>,
    endpoints: &Endpoints,
    network: Subnet,
) -> Option<Inference> {
    let spec_inference = spec.inference.as_ref()?.get_ref();
    let host = hosts.get(spec_inference.host.get_ref())?;
    let models: Vec<String> = spec_inference.models.iter().map(|m| m.get_ref().clone()).collect();
    let spec_sizes: BTreeMap<String, u64> = spec_inference
        .sizes
        .iter()
        .filter_map(|(m, s)| Some((m.get_ref().clone(), vram::parse_size(s.get_ref())?)))
        .collect();
    let sizes: BTreeMap<String, Option<u64>> = models
        .iter()
        .map(|m| (m.clone(), vram::model_size(m, &spec_sizes)))
        .collect();
    let mode = endpoints.inference_mode;
    let mut warnings = vram::check(&sizes, host.gpu.as_ref());
    if mode == InferenceSandbox::Host {
        warnings.push(Warning {
            code: "inference-on-host",
            message: "inference: `sandbox = \"host\"` runs Ollama as a host service outside gVisor: an agent \
                      that can be prompt-injected talks straight to a large C++/Go server with the host's \
                      kernel and GPU driver; remove it for Ollama's own gVisor sandbox"
                .into(),
        });
    }
    Some(Inference {
        host: host.name.clone(),
        port: endpoints.inference_port,
        models,
        acceleration: if host.gpu.is_some() {
            Acceleration::Cuda
        } else {
            Acceleration::Cpu
        },
        mode,
        sandbox: (mode == InferenceSandbox::Gvisor).then(|| INFERENCE_SANDBOX.to_string()),
        bind_address: endpoints.inference_address.unwrap_or(network.gateway()),
        overlay_address: endpoints.inference_overlay,
        sizes,
        warnings,
    })
}
