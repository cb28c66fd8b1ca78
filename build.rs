//! The upstream versions this crate names (the agents' images, the oldest
//! gVisor release the hosts accept) are pinned in one place,
//! `nix/sources.json`, which the flake, CI's installers (`scripts/pin`) and
//! this build all read. This writes them as constants for `src/generator/pins.rs`,
//! with the NVIDIA drivers that gVisor release's nvproxy supports.

use std::env;
use std::fs;
use std::path::Path;

const SOURCES: &str = "nix/sources.json";

/// (constant, entry of sources.json, field of that entry)
const PINS: &[(&str, &str, &str)] = &[
    ("OPENCLAW", "openclaw", "version"),
    ("HERMES", "hermes-agent", "version"),
    ("PICOCLAW", "picoclaw", "version"),
    ("GVISOR_MINIMUM", "gvisor", "minimum"),
];

fn main() {
    println!("cargo:rerun-if-changed={SOURCES}");
    let text = fs::read_to_string(SOURCES).unwrap_or_else(|e| panic!("{SOURCES}: {e}"));
    let sources: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{SOURCES}: {e}"));
    let mut out = String::new();
    for (constant, entry, field) in PINS {
        let value = sources[entry][field]
            .as_str()
            .unwrap_or_else(|| panic!("{SOURCES}: `{entry}.{field}` is not a string"));
        out.push_str(&format!("pub const {constant}: &str = {value:?};\n"));
    }
    // The NVIDIA drivers the pinned gVisor's nvproxy supports: the same
    // list is the default of modules/nvidia.nix's `supportedVersions`.
    let drivers: Vec<&str> = sources["gvisor"]["nvproxyDrivers"]
        .as_array()
        .unwrap_or_else(|| panic!("{SOURCES}: `gvisor.nvproxyDrivers` is not a list"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("{SOURCES}: `gvisor.nvproxyDrivers` holds a non-string"))
        })
        .collect();
    out.push_str(&format!("pub const NVPROXY_DRIVERS: &[&str] = &{drivers:?};\n"));
    let dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    fs::write(Path::new(&dir).join("pins.rs"), out).expect("write pins.rs");
}
