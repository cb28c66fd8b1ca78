//! One integration test binary (one link step): each concern in its own
//! module.

mod common;

mod agents;
mod cli;
mod nix;
mod output;
mod spec_errors;
