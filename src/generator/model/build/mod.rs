//! Spec to model: check every name and cross-reference, resolve defaults.
//! All problems are collected, so one run reports every error in a spec.
//!
//! One file per concern, called in this order (which is also the order the
//! problems are found in): network and overlay (`addressing`), hosts,
//! Matrix, inference, rooms, agents, host ports; then, once every reference
//! is valid, sandboxes and runtimes.

mod addressing;
mod agents;
mod backup;
mod credentials;
mod hosts;
mod inference;
mod matrix;
mod ports;
mod rooms;
mod sandboxes;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;

use super::names::{name_problem, suggest};
use super::{Appliance, Room};
use crate::common::diag::{Diagnostic, SourceFile, SpecErrors};
use crate::generator::spec::Spec;
use crate::generator::spec::schema::{CrawlerBackend, ExtractBackend};

pub const SSH_PORT: u16 = 22;
/// The DNS resolver of the sandboxes with `egress = "web"` (it forwards to
/// the host's resolvers), on the bridge address.
pub const DNS_PORT: u16 = 53;
pub const WIREGUARD_PORT: u16 = 51820;
/// The hub's pairing server (`appliance pair-serve`), on its overlay address.
pub const PAIRING_PORT: u16 = 8009;
/// The admins' Matrix web client (nginx serving Cinny).
pub const WEB_CLIENT_PORT: u16 = 8080;

fn span<T>(value: &Spanned<T>) -> Range<usize> {
    value.span()
}

pub(super) struct Builder<'a> {
    pub(super) spec: &'a Spec,
    diagnostics: Vec<Diagnostic>,
}

impl Builder<'_> {
    pub(super) fn error(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        self.diagnostics.push(Diagnostic::new(span, message).hint(hint));
    }

    /// The size `text` writes, or an error at it with `message` and `hint`.
    pub(super) fn size(&mut self, text: &Spanned<String>, message: String, hint: &str) -> Option<super::Size> {
        let size = super::Size::parse(text.get_ref());
        if size.is_none() {
            self.error(span(text), message, hint);
        }
        size
    }

    /// Every problem found so far, as the error `build` returns.
    fn check(&mut self, source: &SourceFile) -> Result<(), SpecErrors> {
        if self.diagnostics.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors::new(source, std::mem::take(&mut self.diagnostics)))
        }
    }

    /// Matrix accounts must not take the bootstrap account's name.
    fn check_account_name(&mut self, what: &str, name: &Spanned<String>) {
        self.check_name(what, name);
        if name.get_ref() == crate::schema::plan::BOOTSTRAP_LOCALPART {
            self.error(
                span(name),
                format!(
                    "{what} name `{}` is reserved for the account that bootstraps the homeserver",
                    name.get_ref()
                ),
                "choose another name",
            );
        }
    }

    fn check_name(&mut self, what: &str, name: &Spanned<String>) {
        if let Some(problem) = name_problem(name.get_ref()) {
            let message = format!("{what} name `{}` {problem}", name.get_ref());
            let hint = format!(
                "names become Matrix users, containers, systemd units and file names; try `{}`",
                suggest(name.get_ref())
            );
            self.error(span(name), message, hint);
        }
    }

    fn known_host(&mut self, what: &str, host: &Spanned<String>) -> bool {
        if self.spec.hosts.keys().any(|h| h.get_ref() == host.get_ref()) {
            return true;
        }
        let known: Vec<String> = self.spec.hosts.keys().map(|h| format!("`{}`", h.get_ref())).collect();
        let hint = if known.is_empty() {
            format!("declare it as `[hosts.{}]`", host.get_ref())
        } else {
            format!(
                "use one of {} or declare `[hosts.{}]`",
                known.join(", "),
                host.get_ref()
            )
        };
        self.error(
            span(host),
            format!("{what} is on unknown host `{}`", host.get_ref()),
            hint,
        );
        false
    }
}

impl<'a> Builder<'a> {
    /// The spec's agent names, for the checks that must tell agents apart
    /// from admins and room members.
    fn agent_names(&self) -> BTreeSet<&'a str> {
        self.spec.agents.keys().map(|a| a.get_ref().as_str()).collect()
    }
}

/// Validates a parsed spec and resolves it into an [`Appliance`].
pub fn build(source: &SourceFile, spec: &Spec) -> Result<Appliance, SpecErrors> {
    let mut b = Builder {
        spec,
        diagnostics: Vec::new(),
    };

    b.check_name("appliance", &spec.appliance.name);
    let lint_allow = super::allow::resolve(&mut b);
    let (network, overlay) = addressing::network_and_overlay(&mut b);
    let mut hosts = hosts::resolve(&mut b, network, overlay);
    let accounts = matrix::accounts(&mut b);
    let models = inference::models(&mut b);
    let rooms = rooms::resolve(&mut b, &accounts);
    let endpoints = addressing::Endpoints::new(spec, &hosts, network);
    let agents = agents::resolve(
        &mut b,
        &agents::Context {
            hosts: &hosts,
            accounts: &accounts,
            models: &models,
            rooms_of: rooms_of(&rooms),
            endpoints: &endpoints,
            network,
            search_backend: search_backend(spec),
            // Extraction is the crawler's second half: only beside search.
            extract_backend: search_backend(spec) && extract_backend(spec),
        },
    );
    ports::check(&mut b, &hosts, overlay.is_some(), &endpoints);
    let matrix = matrix::resolve(spec, accounts, &endpoints, &hosts, &agents, network);
    let inference = inference::resolve(spec, &hosts, &endpoints, network);
    let backup = backup::resolve(&mut b);
    b.check(source)?;

    // Sandboxes, addresses and runtimes, now that every reference is valid.
    sandboxes::place_inference(&mut hosts, inference.as_ref(), network);
    sandboxes::place_search(&mut hosts, &agents, network);
    sandboxes::place_extract(&mut hosts, &agents, network);
    sandboxes::place(&mut b, &mut hosts, &agents, network);
    b.check(source)?;
    sandboxes::finish_hosts(&mut hosts, &matrix, inference.as_ref(), overlay.is_some());
    sandboxes::place_grants(&mut hosts, &agents, &matrix);

    Ok(Appliance {
        name: spec.appliance.name.get_ref().clone(),
        network,
        overlay,
        hosts,
        matrix,
        inference,
        agents,
        rooms,
        lint_allow,
        backup,
    })
}

/// Which rooms each member is in, by user id, for the agents' allowlists.
/// `[crawler] backend`: SearXNG unless the spec says `off`.
fn search_backend(spec: &Spec) -> bool {
    spec.crawler
        .as_ref()
        .and_then(|c| c.get_ref().backend.as_ref())
        .is_none_or(|b| *b.get_ref() == CrawlerBackend::Searxng)
}

/// `[crawler] extract`: the appliance's webextract unless the spec says `off`.
fn extract_backend(spec: &Spec) -> bool {
    spec.crawler
        .as_ref()
        .and_then(|c| c.get_ref().extract.as_ref())
        .is_none_or(|b| *b.get_ref() == ExtractBackend::Webextract)
}

fn rooms_of(rooms: &BTreeMap<String, Room>) -> BTreeMap<String, Vec<&Room>> {
    let mut rooms_of: BTreeMap<String, Vec<&Room>> = BTreeMap::new();
    for room in rooms.values() {
        for member in &room.members {
            rooms_of.entry(member.user_id.clone()).or_default().push(room);
        }
    }
    rooms_of
}
