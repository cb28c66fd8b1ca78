//! On-host bootstrap: what cannot live in the Nix store is created at boot
//! from a plan the generator wrote.

pub mod plan;
