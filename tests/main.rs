//! One integration test binary (one link step): each concern in its own
//! module.

mod common;
mod synapse;

mod agents;
mod bootstrap;
mod cli;
mod flake;
mod nix;
mod output;
mod spec_errors;
