//! `[inference]`: Ollama's host and models.

use std::collections::{BTreeMap, BTreeSet};

use super::addressing::Endpoints;
use super::{Builder, span};
use crate::model::names::model_problem;
use crate::model::{Host, Inference, Subnet};
use crate::spec::Spec;

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
    models
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
    Some(Inference {
        host: host.name.clone(),
        port: endpoints.inference_port,
        models: spec_inference.models.iter().map(|m| m.get_ref().clone()).collect(),
        acceleration: if host.gpu.is_some() {
            "cuda".into()
        } else {
            "cpu".into()
        },
        bind_address: endpoints.inference_address.unwrap_or(network.gateway()),
    })
}
