//! Upstream artifacts: every one pinned by a real hash, or nixpkgs' own.

#[allow(unused_imports)]
use super::*;

/// Hashes that are syntactically SRI but pin nothing: nixpkgs' `lib.fakeHash`
/// / `lib.fakeSha256` / `lib.fakeSha512` (all `A`s) and the hash of empty
/// content, a common stand-in.
const KNOWN_FAKE_DIGESTS: &[&str] = &[
    "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==",
];

fn is_sri(hash: &str) -> bool {
    let (algorithm, digest) = hash.split_once('-').unwrap_or_default();
    let length = match algorithm {
        "sha256" => 44,
        "sha512" => 88,
        _ => return false,
    };
    digest.len() == length
        && digest.ends_with('=')
        && digest.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
        // lib.fakeHash and friends are all A's.
        && !digest.trim_end_matches('=').chars().all(|c| c == 'A')
        && !KNOWN_FAKE_DIGESTS.contains(&digest)
}

/// Every `sha256-...`/`sha512-...` string of at least 40 digest characters
/// in `text` (shorter ones are names such as `js-sha256-1.0`).
fn sri_strings(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for prefix in ["sha256-", "sha512-"] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let after = &rest[at + prefix.len()..];
            let digest: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "+/=".contains(*c))
                .collect();
            if digest.len() >= 40 {
                found.push(format!("{prefix}{digest}"));
            }
            rest = after;
        }
    }
    found
}

/// Every file git tracks (or, outside a checkout, every file but build
/// output), as text; binary files are skipped.
fn tracked_text_files() -> Vec<(PathBuf, String)> {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty());
    let paths: Vec<PathBuf> = match listed {
        Some(output) => String::from_utf8_lossy(&output.stdout)
            .split('\0')
            .filter(|p| !p.is_empty())
            .map(|p| root().join(p))
            .collect(),
        None => {
            let mut files = nix_files(&root());
            files.extend(
                ["flake.lock", "nix/sources.json", "nix/locks/openclaw/package-lock.json"]
                    .iter()
                    .map(|f| root().join(f)),
            );
            files
        }
    };
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|text| (p, text)))
        .collect()
}

#[test]
fn every_hash_in_the_repository_is_real_sri_and_no_placeholder() {
    // The detector itself: fakes are found and rejected, real ones pass.
    let fake = format!(
        "hash = \"sha256-{}=\"; sha512-{}",
        "A".repeat(43),
        KNOWN_FAKE_DIGESTS[1]
    );
    let found = sri_strings(&fake);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|h| !is_sri(h)));
    assert!(!is_sri(&format!("sha256-{}", KNOWN_FAKE_DIGESTS[0])));
    assert!(is_sri("sha256-oMees7EKANS5dkMHIqAHfGcumrNMtTEEA+dmpl8/dLE="));
    assert!(sri_strings("js-sha256-1.0.0").is_empty());

    let files = tracked_text_files();
    assert!(files.len() > 50, "found only {} files", files.len());
    let mut checked = 0;
    let mut bad = Vec::new();
    for (path, text) in &files {
        let relative = path.strip_prefix(root()).unwrap_or(path).display().to_string();
        // This file spells the fake digests out to reject them.
        if relative == "tests/flake/pins.rs" {
            continue;
        }
        for hash in sri_strings(text) {
            checked += 1;
            if !is_sri(&hash) {
                bad.push(format!("{relative}: `{hash}`"));
            }
        }
    }
    assert!(checked > 400, "found only {checked} hashes");
    assert!(
        bad.is_empty(),
        "not a real SRI hash, or a placeholder:\n{}",
        bad.join("\n")
    );
}

/// Attributes that hold a hash in Nix (fetchers, builders).
const HASH_ATTRIBUTES: &[&str] = &[
    "hash",
    "sha256",
    "sha512",
    "vendorHash",
    "cargoHash",
    "npmDepsHash",
    "outputHash",
    "narHash",
];

#[test]
fn every_hash_in_our_nix_is_pinned_in_sources_or_comes_from_nixpkgs() {
    let files = hand_written_nix();
    let mut bad = Vec::new();
    for file in files {
        let tokens = tokenize(&read(&file));
        for window in tokens.windows(4) {
            let [Token::Ident(name), Token::Punct('='), value, _] = window else {
                continue;
            };
            // `a.hash == b.hash` is a comparison, not a binding.
            if *value == Token::Punct('=') {
                continue;
            }
            if !HASH_ATTRIBUTES.contains(&name.as_str()) {
                continue;
            }
            // A literal must be real; anything else is a reference into
            // nix/sources.json or the lock files (checked below), never null,
            // empty or one of nixpkgs' fake hashes.
            let ok = match value {
                Token::Str(literal) => is_sri(literal),
                Token::Ident(word) => !["null", "lib", "fakeHash", "fakeSha256"].contains(&word.as_str()),
                _ => false,
            };
            if !ok {
                bad.push(format!(
                    "{}: `{name} = {value:?}`",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
        let text = read(&file);
        for fake in ["lib.fakeHash", "lib.fakeSha256", "lib.fakeSha512"] {
            if text.contains(fake) {
                bad.push(format!("{}: uses `{fake}`", file.display()));
            }
        }
    }
    assert!(bad.is_empty(), "hash attributes that pin nothing:\n{}", bad.join("\n"));

    // Packages nixpkgs pins itself are named as such and pin nothing here.
    let sources = read_json(&root().join("nix/sources.json"));
    for (name, source) in sources.as_object().unwrap().iter().filter(|(k, _)| !k.starts_with('_')) {
        if source["from"] == "nixpkgs" {
            let fields: Vec<&String> = source.as_object().unwrap().keys().collect();
            assert!(
                fields.iter().all(|f| !f.to_lowercase().ends_with("hash")),
                "`{name}` comes from nixpkgs but pins hashes: {fields:?}"
            );
            let overlay = read(&root().join("nix/overlay.nix"));
            assert!(overlay.contains(&format!("sources.{name}")), "`{name}` is unused");
        }
    }
}

#[test]
fn every_upstream_artifact_is_pinned_and_says_how_to_recompute_it() {
    let sources = read_json(&root().join("nix/sources.json"));
    for (name, source) in sources.as_object().unwrap().iter().filter(|(k, _)| !k.starts_with('_')) {
        assert!(source["version"].is_string(), "`{name}` has no version");
        assert!(
            source["prefetch"].as_str().is_some_and(|p| !p.is_empty()),
            "`{name}` does not say how its pins are recomputed (`prefetch`)"
        );
        for (field, value) in source.as_object().unwrap() {
            let is_hash_field = field == "rev" || field.to_lowercase().ends_with("hash");
            if !is_hash_field {
                continue;
            }
            match value {
                Value::Null => {
                    panic!("`{name}.{field}` is null: every hash is pinned (or the package comes from nixpkgs)")
                }
                Value::String(hash) if field == "rev" => {
                    assert!(hash.len() == 40, "`{name}.rev` is not a commit id")
                }
                Value::String(hash) => assert!(is_sri(hash), "`{name}.{field}` = `{hash}` is not a real SRI hash"),
                other => panic!("`{name}.{field}` = {other}"),
            }
        }
    }

    // The OpenClaw lock pins every fetched npm package by integrity, and
    // its two top-level packages are the ones sources.json names.
    let lock = read_json(&root().join("nix/locks/openclaw/package-lock.json"));
    let packages = lock["packages"].as_object().unwrap();
    for (key, package) in packages.iter().filter(|(key, _)| !key.is_empty()) {
        if package.get("inBundle").is_some() || package.get("link").is_some() {
            continue;
        }
        assert!(
            package["resolved"]
                .as_str()
                .is_some_and(|r| r.starts_with("https://registry.npmjs.org/")),
            "`{key}` is not fetched from the npm registry"
        );
        assert!(
            package["integrity"].as_str().is_some_and(is_sri),
            "`{key}` has no integrity hash"
        );
    }
    let openclaw = &sources["openclaw"];
    assert_eq!(packages["node_modules/openclaw"]["version"], openclaw["version"]);
    assert_eq!(packages["node_modules/openclaw"]["integrity"], openclaw["hash"]);
    assert_eq!(
        packages["node_modules/@openclaw/matrix"]["version"],
        openclaw["matrixVersion"]
    );
    assert_eq!(
        packages["node_modules/@openclaw/matrix"]["integrity"],
        openclaw["matrixHash"]
    );

    // The Hermes lock: every wheel from PyPI with a sha256; the release
    // wheel is the one sources.json names.
    let wheels = read_json(&root().join("nix/locks/hermes-x86_64-linux.json"));
    let mut release = None;
    for wheel in wheels["wheels"].as_array().unwrap() {
        let url = wheel["url"].as_str().unwrap();
        assert!(
            url.starts_with("https://files.pythonhosted.org/") && url.ends_with(".whl"),
            "{url}"
        );
        assert!(
            wheel["hash"]
                .as_str()
                .is_some_and(|h| h.starts_with("sha256-") && is_sri(h))
        );
        if wheel["name"] == "hermes-agent" {
            release = Some(wheel);
        }
    }
    let release = release.expect("hermes-agent itself is in the wheel lock");
    assert_eq!(release["version"], sources["hermes-agent"]["version"]);
    assert_eq!(release["hash"], sources["hermes-agent"]["hash"]);
}

// ---------------------------------------------------------------------------
