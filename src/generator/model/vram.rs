//! Whether the spec's models fit in its GPUs' memory together. The MAGI
//! demo warned that they must ("otherwise you'll get bad performance"):
//! Ollama keeps every model loaded (`OLLAMA_KEEP_ALIVE=-1`), and one that
//! does not fit is split onto the CPU or evicts another on every turn.
//!
//! An estimate, not a measurement: what a model needs loaded grows with its
//! context window, so the known sizes below are the ones Ollama reported at
//! the demo's contexts.

use std::collections::BTreeMap;

use super::{Gpu, Warning};

const GB: u64 = 1_000_000_000;
const GIB: u64 = 1 << 30;

/// What a model needs loaded, in bytes, as `ollama ps` reported it in the
/// MAGI demo (its contexts: 262144, 202752 and 262144 tokens; Ollama prints
/// decimal GB).
const KNOWN_MODELS: &[(&str, u64)] = &[
    ("gemma4:26b-a4b-it-q8_0", 89 * GB),
    ("glm-4.7-flash:q4_K_M", 40 * GB),
    ("qwen3.5:27b-q4_K_M", 44 * GB),
];

/// How Google Compute Engine offers a GPU model (`appliance gce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GceOffer {
    /// Machine types that come with their GPUs attached: the family's name
    /// and its machine type for each GPU count it offers.
    Bundled {
        family: &'static str,
        types: &'static [(u32, &'static str)],
    },
    /// Attached to an N1 machine type the user sizes, as
    /// `--accelerator=type=nvidia-tesla-<name>`.
    N1,
}

/// One GPU model the appliance knows: every table about GPUs reads this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuModel {
    /// The spec's spellings (lower case; matched case-insensitively); the
    /// first is the model's name.
    pub names: &'static [&'static str],
    /// Memory of one GPU (NVIDIA's data sheets; where a model comes in more
    /// sizes, the smaller one is assumed and the spec can say `vram`).
    pub vram: Option<u64>,
    /// CUDA compute capability (NVIDIA's "CUDA GPUs" table): nixpkgs builds
    /// CUDA device code only for it (`nixpkgs.config.cudaCapabilities`).
    /// `None`: nixpkgs' default set of capabilities applies.
    pub cuda_capability: Option<&'static str>,
    /// How GCE offers it; `None` where it does not (the A10G is AWS's).
    pub gce: Option<GceOffer>,
}

/// The one GPU catalog: the VRAM check, the spec's model check, the CUDA
/// capability of the image builds and `appliance gce`'s machine types.
pub const GPU_CATALOG: &[GpuModel] = &[
    GpuModel {
        names: &["t4"],
        vram: Some(16 * GIB),
        cuda_capability: Some("7.5"),
        gce: Some(GceOffer::N1),
    },
    GpuModel {
        names: &["l4"],
        vram: Some(24 * GIB),
        cuda_capability: Some("8.9"),
        gce: Some(GceOffer::Bundled {
            family: "G2",
            types: &[
                (1, "g2-standard-4"),
                (2, "g2-standard-24"),
                (4, "g2-standard-48"),
                (8, "g2-standard-96"),
            ],
        }),
    },
    GpuModel {
        names: &["a10g"],
        vram: Some(24 * GIB),
        cuda_capability: Some("8.6"),
        gce: None,
    },
    GpuModel {
        names: &["a100", "a100-40gb"],
        vram: Some(40 * GIB),
        cuda_capability: Some("8.0"),
        gce: Some(GceOffer::Bundled {
            family: "A2 high-GPU",
            types: &[
                (1, "a2-highgpu-1g"),
                (2, "a2-highgpu-2g"),
                (4, "a2-highgpu-4g"),
                (8, "a2-highgpu-8g"),
                (16, "a2-megagpu-16g"),
            ],
        }),
    },
    GpuModel {
        names: &["a100-80gb"],
        vram: Some(80 * GIB),
        cuda_capability: Some("8.0"),
        gce: Some(GceOffer::Bundled {
            family: "A2 ultra-GPU",
            types: &[
                (1, "a2-ultragpu-1g"),
                (2, "a2-ultragpu-2g"),
                (4, "a2-ultragpu-4g"),
                (8, "a2-ultragpu-8g"),
            ],
        }),
    },
    GpuModel {
        names: &["h100", "h100-80gb"],
        vram: Some(80 * GIB),
        cuda_capability: Some("9.0"),
        gce: Some(GceOffer::Bundled {
            family: "A3 high-GPU",
            types: &[(8, "a3-highgpu-8g")],
        }),
    },
    // Older N1 accelerators: their memory and capability are left to the
    // spec and to nixpkgs' defaults, as before the catalog was one table.
    GpuModel {
        names: &["v100"],
        vram: None,
        cuda_capability: None,
        gce: Some(GceOffer::N1),
    },
    GpuModel {
        names: &["p4"],
        vram: None,
        cuda_capability: None,
        gce: Some(GceOffer::N1),
    },
    GpuModel {
        names: &["p100"],
        vram: None,
        cuda_capability: None,
        gce: Some(GceOffer::N1),
    },
];

/// The catalog's entry for a spec's `model`, case-insensitively.
pub fn gpu_model(model: &str) -> Option<&'static GpuModel> {
    let model = model.to_ascii_lowercase();
    GPU_CATALOG.iter().find(|gpu| gpu.names.contains(&model.as_str()))
}

/// The names of the models GCE offers, for hints.
pub fn gce_models() -> Vec<&'static str> {
    GPU_CATALOG
        .iter()
        .filter(|gpu| gpu.gce.is_some())
        .map(|gpu| gpu.names[0])
        .collect()
}

/// Bytes of a size as the spec writes it (`512m`, `24g`: Docker's binary
/// units), through the one size parser.
pub fn parse_size(text: &str) -> Option<u64> {
    super::Size::parse(text).map(super::Size::bytes)
}

/// The memory of one GPU of this model, when the catalog knows it.
pub fn known_gpu(model: &str) -> Option<u64> {
    gpu_model(model).and_then(|gpu| gpu.vram)
}

/// What a model needs loaded: the spec's size, else the table's.
pub fn model_size(model: &str, spec_sizes: &BTreeMap<String, u64>) -> Option<u64> {
    spec_sizes
        .get(model)
        .copied()
        .or_else(|| KNOWN_MODELS.iter().find(|(name, _)| *name == model).map(|(_, s)| *s))
}

fn gb(bytes: u64) -> String {
    format!("{:.1} GB", bytes as f64 / GB as f64)
}

/// The VRAM check's warnings: models whose size nobody knows, a GPU whose
/// memory nobody knows, and models that do not fit together.
pub fn check(sizes: &BTreeMap<String, Option<u64>>, gpu: Option<&Gpu>) -> Vec<Warning> {
    let Some(gpu) = gpu else {
        // CPU inference: the models share the host's memory, not VRAM.
        return Vec::new();
    };
    let mut warnings = Vec::new();
    let unknown: Vec<&str> = sizes
        .iter()
        .filter(|(_, size)| size.is_none())
        .map(|(m, _)| m.as_str())
        .collect();
    if !unknown.is_empty() {
        warnings.push(Warning {
            code: "inference-size-unknown",
            message: format!(
                "inference: no size known for {}; give each its loaded size in `[inference.sizes]` \
                 (as `ollama ps` shows it) so the VRAM check can count it",
                unknown.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let Some(per_gpu) = gpu.vram else {
        warnings.push(Warning {
            code: "inference-vram-unknown",
            message: format!(
                "inference: the memory of GPU model `{}` is not known; set `vram` in the host's `gpu` \
                 (e.g. `vram = \"24g\"`) so the VRAM check can run",
                gpu.model
            ),
        });
        return warnings;
    };
    let total_vram = per_gpu * u64::from(gpu.count);
    let needed: u64 = sizes.values().flatten().sum();
    if needed > total_vram {
        warnings.push(Warning {
            code: "inference-vram",
            message: format!(
                "inference: the models need about {} loaded together, but {} x {} has {}; Ollama will \
                 split them onto the CPU or reload them on every turn. Serve fewer or smaller models, \
                 or use more GPUs",
                gb(needed),
                gpu.count,
                gpu.model,
                gb(total_vram)
            ),
        });
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(models: &[&str], spec: &BTreeMap<String, u64>) -> BTreeMap<String, Option<u64>> {
        models.iter().map(|m| (m.to_string(), model_size(m, spec))).collect()
    }

    const DEMO: [&str; 3] = ["gemma4:26b-a4b-it-q8_0", "glm-4.7-flash:q4_K_M", "qwen3.5:27b-q4_K_M"];

    #[test]
    fn the_demo_models_fit_on_eight_l4s_but_not_on_four() {
        let demo = sizes(&DEMO, &BTreeMap::new());
        assert!(check(&demo, Some(&Gpu::nvidia("l4", 8))).is_empty());
        let warnings = check(&demo, Some(&Gpu::nvidia("L4", 4)));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].code, "inference-vram");
        assert!(warnings[0].message.contains("173.0 GB"), "{}", warnings[0].message);
        assert!(warnings[0].message.contains("103.1 GB"), "{}", warnings[0].message);
    }

    #[test]
    fn spec_sizes_count_and_unknown_models_are_named() {
        let spec = BTreeMap::from([("llama3:70b".to_string(), parse_size("40g").unwrap())]);
        let models = sizes(&["llama3:70b", "mystery:1b"], &spec);
        let warnings = check(&models, Some(&Gpu::nvidia("l4", 1)));
        let codes: Vec<_> = warnings.iter().map(|w| w.code).collect();
        assert_eq!(codes, ["inference-size-unknown", "inference-vram"]);
        assert!(warnings[0].message.contains("`mystery:1b`"));
        assert!(check(&models, None).is_empty(), "CPU inference has no VRAM to check");
        let mut odd = Gpu::nvidia("rtx-9090", 2);
        odd.vram = None;
        assert_eq!(check(&models, Some(&odd))[1].code, "inference-vram-unknown");
    }

    #[test]
    fn the_catalog_names_each_model_once_in_lower_case() {
        let mut seen = std::collections::BTreeSet::new();
        for gpu in GPU_CATALOG {
            for name in gpu.names {
                assert_eq!(*name, name.to_ascii_lowercase());
                assert!(seen.insert(*name), "`{name}` is in the catalog twice");
            }
            if let Some(GceOffer::Bundled { types, .. }) = gpu.gce {
                assert!(types.windows(2).all(|w| w[0].0 < w[1].0), "{:?}", gpu.names);
            }
        }
        let l4 = gpu_model("L4").unwrap();
        assert_eq!((l4.vram, l4.cuda_capability), (Some(24 * GIB), Some("8.9")));
        assert_eq!(gpu_model("a100-40gb"), gpu_model("a100"));
        assert_eq!(gpu_model("a10g").unwrap().gce, None);
        assert!(gpu_model("rtx-9090").is_none());
    }

    #[test]
    fn sizes_use_docker_units() {
        assert_eq!(parse_size("24g"), Some(24 * GIB));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("24GB"), None);
        assert_eq!(parse_size("0g"), None);
    }
}
