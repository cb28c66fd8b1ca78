//! agent-appliance: one spec to a hardened, reproducible machine running AI
//! agents in gVisor sandboxes on a private Matrix homeserver.
//!
//! Data flows one way: [`spec`] (TOML) -> [`model`] (validated) ->
//! [`render`] (files) -> [`output`] (atomic writes and drift checks).

pub mod audit;
pub mod bootstrap;
pub mod cli;
pub mod commands;
pub mod diag;
pub mod docker;
pub mod kinds;
pub mod lint;
pub mod model;
pub mod nixlog;
pub mod output;
pub mod pairing;
pub mod render;
pub mod runsc;
pub mod spec;
pub mod term;
pub mod warden;
