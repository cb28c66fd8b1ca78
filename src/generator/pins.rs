//! Upstream versions, read from `nix/sources.json` at build time (build.rs):
//! the one place they are pinned, so the images' tags, the generated
//! assertions and CI's installers cannot disagree.

include!(concat!(env!("OUT_DIR"), "/pins.rs"));
