//! flake.lock: real GitHub revisions in the format Nix writes.

#[allow(unused_imports)]
use super::*;

#[test]
fn the_lock_pins_real_github_revisions_in_the_format_nix_writes() {
    let lock = read_json(&root().join("flake.lock"));
    assert_eq!(lock["version"], 7, "Nix (2.8 up to today's) writes lock version 7");
    assert_eq!(lock["root"], "root");
    let nodes = lock["nodes"].as_object().unwrap();
    let root_inputs = nodes["root"]["inputs"].as_object().unwrap();
    assert_eq!(root_inputs.keys().collect::<Vec<_>>(), ["nixpkgs"]);
    for (name, node) in nodes.iter().filter(|(name, _)| *name != "root") {
        let locked = &node["locked"];
        let keys: Vec<&String> = locked.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["lastModified", "narHash", "owner", "repo", "rev", "type"],
            "node `{name}`: a github lock has exactly these keys"
        );
        assert_eq!(locked["type"], "github", "node `{name}`");
        let rev = locked["rev"].as_str().unwrap();
        assert!(
            rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "node `{name}`: `{rev}` is not a full commit id"
        );
        let nar_hash = locked["narHash"].as_str().unwrap();
        assert!(
            nar_hash.starts_with("sha256-") && nar_hash.len() == 51 && nar_hash.ends_with('='),
            "node `{name}`: `{nar_hash}` is not an SRI sha256"
        );
        assert!(!nar_hash.contains("AAAAAAAAAA"), "node `{name}`: a placeholder hash");
        assert!(locked["lastModified"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(node["original"]["type"], "github");
        assert_eq!(node["original"]["owner"], locked["owner"]);
        assert_eq!(node["original"]["repo"], locked["repo"]);
    }
    assert_eq!(nodes["nixpkgs"]["original"]["ref"], "nixos-26.05");
    assert!(read(&root().join("flake.nix")).contains("\"github:NixOS/nixpkgs/nixos-26.05\""));
}
