//! One integration test binary (one link step): each concern in its own
//! module.

mod support;

mod admins;
mod agents;
mod backup;
mod bootstrap;
mod build;
mod cli;
mod crawler;
mod doctor;
mod egress;
mod flake;
mod flash;
mod gce;
mod gpu_proof;
mod hostile;
mod inference;
mod layers;
mod lints;
mod netstack;
mod nix;
mod nvproxy;
mod output;
mod pairing;
mod rehearsal;
mod sandbox;
mod spec_errors;
mod upgrade;
mod vmtest;
mod warden;
