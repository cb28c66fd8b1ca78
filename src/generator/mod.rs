//! The generator, on the operator's machine: spec (TOML) → model
//! (validated) → render (files) → output (atomic writes, drift checks).
//! `spec`, `runsc`, `formats` and `pins` are its foundation; `model`,
//! `kinds` and `lint` the model; `render`, `docker` and `output` turn the
//! model into files.

pub mod docker;
pub mod formats;
pub mod kinds;
pub mod lint;
pub mod model;
pub mod output;
pub mod pins;
pub mod render;
pub mod runsc;
pub mod spec;
