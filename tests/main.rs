//! One integration test binary (one link step): each concern in its own
//! module.

mod common;
mod dockerd;
mod synapse;

mod agents;
mod bootstrap;
mod cli;
mod doctor;
mod flake;
mod inference;
mod nix;
mod output;
mod sandbox;
mod spec_errors;
