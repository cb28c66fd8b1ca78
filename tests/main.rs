//! One integration test binary (one link step): each concern in its own
//! module.

mod common;
mod dockerd;
mod synapse;

mod agents;
mod bootstrap;
mod build;
mod cli;
mod crawler;
mod doctor;
mod flake;
mod flash;
mod gce;
mod inference;
mod nix;
mod output;
mod sandbox;
mod spec_errors;
