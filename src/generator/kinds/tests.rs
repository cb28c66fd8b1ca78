//! The registry test: every kind in [`ALL`] has every part the appliance,
//! its tests and its docs need, checked against the repository's real
//! files. docs/architecture.md ("How to add an agent kind") lists what this
//! enforces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{ALL, CiInstall, Validator, of};
use crate::generator::model::image;
use crate::generator::spec::schema::AgentKind;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn exists(path: &str) -> bool {
    Path::new(&root().join(path)).is_file()
}

/// Every spec the tests load: the root one and each example's.
fn specs() -> Vec<String> {
    let mut specs = vec![read("appliance.toml")];
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path().join("appliance.toml");
        if path.is_file() {
            specs.push(std::fs::read_to_string(path).unwrap());
        }
    }
    specs
}

#[test]
fn the_registry_lists_each_kind_once_under_its_spec_spelling() {
    let names: BTreeSet<&str> = ALL.iter().map(|k| k.name()).collect();
    let labels: BTreeSet<&str> = ALL.iter().map(|k| k.label()).collect();
    let ids: BTreeSet<AgentKind> = ALL.iter().map(|k| k.id()).collect();
    assert_eq!(
        (names.len(), labels.len(), ids.len()),
        (ALL.len(), ALL.len(), ALL.len())
    );
    for kind in ALL {
        assert_eq!(of(kind.id()).name(), kind.name(), "of() and ALL disagree");
        assert_eq!(kind.id().to_string(), kind.name(), "Display is not the spec's spelling");
        #[derive(serde::Deserialize)]
        struct Probe {
            kind: AgentKind,
        }
        let probe: Probe = toml::from_str(&format!("kind = \"{}\"", kind.name())).unwrap();
        assert_eq!(probe.kind, kind.id(), "{}: serde spells it otherwise", kind.name());
    }
}

#[test]
fn every_kind_says_what_the_spec_may_ask_and_what_its_sandbox_needs() {
    for kind in ALL {
        let name = kind.name();
        let supports = kind.supports();
        assert!(!supports.tools.is_empty(), "{name}: no tools");
        assert!(
            supports.min_context.is_none_or(|min| min <= supports.default_context),
            "{name}: the default context is below the minimum"
        );
        let sandbox = kind.sandbox();
        assert!(
            sandbox.config_target.ends_with(&format!("/{}", sandbox.config_file)),
            "{name}: the config is mounted under another name"
        );
        assert!(
            sandbox.cpus > 0.0 && sandbox.pids >= crate::generator::model::MIN_PIDS,
            "{name}: limits"
        );
        assert!(
            sandbox.memory.bytes() >= 6 << 20,
            "{name}: memory below Docker's minimum"
        );
        let plan = kind.plan();
        assert!(
            !plan.token_env.is_empty(),
            "{name}: the token is written under no env name"
        );
        assert!(
            plan.rate_limit().0 > 0 && plan.rate_limit().1 > 0,
            "{name}: unlimited or zero rate"
        );
    }
}

#[test]
fn every_kind_has_its_image_and_package_pinned_to_its_version() {
    let sources: serde_json::Value = serde_json::from_str(&read("nix/sources.json")).unwrap();
    let overlay = read("nix/overlay.nix");
    let images = read("images/default.nix");
    for kind in ALL {
        let (name, layout, proof) = (kind.name(), kind.image(), kind.proof());
        assert_eq!(layout.tag, kind.version(), "{name}: the image's tag is not the version");
        assert!(
            image::all().contains(&layout),
            "{name}: image::all() leaves its image out"
        );
        assert!(
            exists(&format!("images/{}.nix", layout.name)),
            "{name}: no images/{}.nix",
            layout.name
        );
        assert!(
            images.contains(&format!("{0} = import ./{0}.nix", layout.name)),
            "{name}: images/default.nix does not call images/{}.nix",
            layout.name
        );
        let package = format!("nix/packages/{}.nix", proof.package);
        assert!(exists(&package), "{name}: no {package}");
        let built = layout.version_check.package();
        assert!(
            overlay.contains(&format!("{built} = final.callPackage ./packages/{}.nix", proof.package)),
            "{name}: nix/overlay.nix does not build {built} from {package}"
        );
        assert_eq!(
            sources[proof.sources_key]["version"].as_str(),
            Some(kind.version()),
            "{name}: nix/sources.json `{}` pins another version",
            proof.sources_key
        );
    }
}

#[test]
fn every_kind_has_a_validator_with_a_negative_twin() {
    let tests = read("tests/agents.rs");
    for kind in ALL {
        let (name, proof) = (kind.name(), kind.proof());
        let script_path = match proof.ci {
            CiInstall::Built { script } => script,
            CiInstall::Pinned { .. } | CiInstall::None { .. } => ".ci/agents.sh",
        };
        let script = read(script_path);
        for test in [proof.accepts_test, proof.rejects_test] {
            assert!(
                tests.contains(&format!("#[test]\nfn {test}()")),
                "{name}: tests/agents.rs has no test `{test}`"
            );
        }
        match proof.validator {
            Validator::Installed { dir } => {
                assert!(
                    script.contains(dir),
                    "{name}: {script_path} does not install into {dir}"
                );
                assert!(tests.contains(dir), "{name}: tests/agents.rs does not use {dir}");
            }
            Validator::File { path } => {
                assert!(exists(path), "{name}: validator {path} is missing");
                let stem = Path::new(path).file_stem().unwrap().to_str().unwrap();
                assert!(tests.contains(stem), "{name}: tests/agents.rs does not use {path}");
            }
        }
    }
}

#[test]
fn every_kind_is_installed_by_ci_or_says_why_not() {
    let script = read(".ci/agents.sh");
    let sources: serde_json::Value = serde_json::from_str(&read("nix/sources.json")).unwrap();
    for kind in ALL {
        let name = kind.name();
        match kind.proof().ci {
            CiInstall::Pinned { var } => {
                let pin = format!("{var}=$(scripts/pin {} version)", kind.proof().sources_key);
                assert!(
                    script.lines().any(|l| l == pin),
                    "{name}: .ci/agents.sh has no line `{pin}`"
                );
            }
            CiInstall::Built { script: builder } => {
                let module = &sources[kind.proof().sources_key]["goModule"];
                assert_eq!(
                    module["version"].as_str().map(|v| v.trim_start_matches('v')),
                    Some(kind.version()),
                    "{name}: nix/sources.json's `goModule` builds another version"
                );
                assert!(
                    read(builder).contains("goModule"),
                    "{name}: {builder} does not read `goModule`"
                );
                let note = format!("{}: built by {builder}", kind.label());
                assert!(
                    script.lines().any(|l| l.starts_with('#') && l.contains(&note)),
                    "{name}: .ci/agents.sh has no comment `{note}`"
                );
            }
            CiInstall::None { why } => {
                assert!(!why.is_empty(), "{name}: no reason");
                let note = format!("{}: not installed", kind.label());
                assert!(
                    script
                        .lines()
                        .any(|l| l.starts_with('#') && l.contains(&note) && l.contains(why)),
                    "{name}: .ci/agents.sh has no comment `{note}: ... {why}`"
                );
            }
        }
    }
}

#[test]
fn every_kind_is_documented_used_by_a_spec_and_snapshotted() {
    let agents = read("docs/agents.md");
    let spec_doc = read("docs/spec.md");
    let specs = specs();
    let snapshots: Vec<String> = std::fs::read_dir(root().join("tests/snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for kind in ALL {
        let name = kind.name();
        assert!(
            agents.lines().any(|l| l == format!("## {}", kind.label())),
            "{name}: docs/agents.md has no `## {}` section",
            kind.label()
        );
        assert!(
            spec_doc.contains(&format!("`\"{name}\"`")),
            "{name}: docs/spec.md does not list it"
        );
        let line = format!("kind = \"{name}\"");
        assert!(
            specs.iter().any(|s| s.lines().any(|l| l.trim() == line)),
            "{name}: no spec in the repository (root or examples/) uses it"
        );
        let suffix = format!("-{}.snap", kind.sandbox().config_file);
        assert!(
            snapshots
                .iter()
                .any(|f| f.starts_with("main__agents__") && f.ends_with(&suffix)),
            "{name}: no snapshot of its config in tests/snapshots"
        );
    }
}
