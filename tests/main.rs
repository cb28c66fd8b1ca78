//! One integration test binary (one link step): each concern in its own
//! module.

mod common;
mod dockerd;
mod synapse;

mod agents;
mod bootstrap;
mod build;
mod cli;
mod doctor;
mod flake;
mod flash;
mod gce;
mod nix;
mod output;
mod rehearsal;
mod sandbox;
mod spec_errors;
