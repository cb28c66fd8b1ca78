//! Every lint fires on a spec (or, where the spec cannot express the hole,
//! a model) that has it; the shipped specs are quiet; `[lints] allow` needs
//! a known code and a reason, and an allowed deny lint no longer blocks.

use std::fs;
use std::path::Path;

use agent_appliance::generator::lint::{self, Finding, LINTS, Severity};
use agent_appliance::generator::model::Appliance;
use agent_appliance::operator::commands::load;

use crate::support::{assert_contains, root, run_in, stderr};

use crate::support::SOLO_SPEC as BASE;

fn write_spec(dir: &Path, text: &str) {
    fs::write(dir.join("appliance.toml"), text).unwrap();
}

/// Findings of a spec text, through the same loader `check` uses.
fn findings(text: &str) -> Vec<Finding> {
    let dir = tempfile::tempdir().unwrap();
    write_spec(dir.path(), text);
    agent_appliance::operator::commands::load_linted(&dir.path().join("appliance.toml"))
        .unwrap()
        .1
}

fn codes(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.code).collect()
}

fn first_sandbox(appliance: &mut Appliance) -> &mut agent_appliance::generator::model::Sandbox {
    &mut appliance.hosts.get_mut("box").unwrap().sandboxes[0]
}

fn base() -> Appliance {
    let dir = tempfile::tempdir().unwrap();
    write_spec(dir.path(), BASE);
    load(&dir.path().join("appliance.toml")).unwrap()
}

#[test]
fn the_shipped_specs_are_quiet_but_for_declared_ports() {
    let mut specs = vec![root().join("appliance.toml")];
    for example in ["edge-pi", "existing-host", "minimal"] {
        specs.push(root().join("examples").join(example).join("appliance.toml"));
    }
    for spec in specs {
        let (_, found) = agent_appliance::operator::commands::load_linted(&spec).unwrap();
        // The one example that publishes its control UI allows it, with why.
        let unallowed: Vec<String> = found
            .iter()
            .filter(|f| f.allowed.is_none())
            .map(|f| format!("{}: {}", f.code, f.message))
            .collect();
        assert!(unallowed.is_empty(), "{}: {unallowed:?}", spec.display());
    }
    assert!(findings(BASE).is_empty());
}

#[test]
fn spec_level_lints_fire() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "matrix-federation",
            "admins = [\"owner\"]",
            "admins = [\"owner\"]\nfederation = true",
        ),
        (
            "room-without-admin",
            "members = [\"helper\", \"@owner\"]",
            "members = [\"helper\"]",
        ),
        (
            "web-egress-with-exec",
            "kind = \"picoclaw\"\nhost = \"box\"",
            "kind = \"picoclaw\"\nhost = \"box\"\ntools = [\"exec\"]\nremote-exec = true\negress = \"web\"",
        ),
        (
            "code-network-raw-sockets",
            "kind = \"picoclaw\"\nhost = \"box\"",
            "kind = \"hermes\"\nhost = \"box\"\ntools = [\"code\"]\ncode-execution = \"docker-in-gvisor\"\ncode-network = true",
        ),
        (
            "inline-secret",
            "[appliance]",
            "# GH_TOKEN = \"ghp_abcdefghijklmnopqrstuvwxyz012345\"\n[appliance]",
        ),
        (
            "gpu-capabilities-broad",
            "target = \"nixos\"",
            "target = \"nixos\"\ngpu = { vendor = \"nvidia\", model = \"l4\", count = 1, driver-capabilities = [\"compute\", \"utility\", \"graphics\"] }",
        ),
        (
            "published-port",
            "kind = \"picoclaw\"\nhost = \"box\"",
            "kind = \"openclaw\"\nhost = \"box\"\npublish = [18789]",
        ),
    ];
    for (code, from, to) in cases {
        assert!(BASE.contains(from), "{code}: base lacks `{from}`");
        let text = BASE.replacen(from, to, 1);
        let found = findings(&text);
        assert!(
            codes(&found).contains(code),
            "{code} does not fire: {:?}",
            codes(&found)
        );
    }
}

/// Holes the spec cannot express: the lints guard the model against a
/// future code change, so they are tested on a model that has the hole.
#[test]
fn model_level_lints_fire() {
    let mutate = |f: &dyn Fn(&mut Appliance)| {
        let mut appliance = base();
        f(&mut appliance);
        codes(&lint::run(&appliance, ""))
    };
    let found = mutate(&|a| first_sandbox(a).profile.docker_in_gvisor = true);
    assert!(found.contains(&"runsc-permissive-flags"), "{found:?}");
    let found = mutate(&|a| first_sandbox(a).user = "0:0".into());
    assert!(found.contains(&"sandbox-root"), "{found:?}");
    let found = mutate(&|a| first_sandbox(a).memory = agent_appliance::generator::model::Size::mib(0));
    assert!(found.contains(&"sandbox-without-limits"), "{found:?}");
    let found = mutate(&|a| first_sandbox(a).pids_limit = 0);
    assert!(found.contains(&"sandbox-without-limits"), "{found:?}");
    let found = mutate(&|a| a.matrix.bind_addresses.push("0.0.0.0".parse().unwrap()));
    assert!(found.contains(&"service-beyond-appliance"), "{found:?}");
    let found = mutate(&|a| a.inference.as_mut().unwrap().bind_address = "203.0.113.5".parse().unwrap());
    assert!(found.contains(&"service-beyond-appliance"), "{found:?}");
    // `--host-uds=all` in a runtime's arguments, as a hand-edited
    // daemon.json or a demo-style runtime would have it.
    let mut raw = Vec::new();
    lint::runtime(
        "runsc",
        &["--platform=systrap".into(), "--host-uds=all".into()],
        &mut raw,
    );
    assert_eq!(raw.first().map(|r| r.0), Some("runsc-host-uds-all"));
}

#[test]
fn every_lint_has_a_firing_test() {
    // Keep in step with the two tests above.
    let tested = [
        "code-network-raw-sockets",
        "matrix-federation",
        "room-without-admin",
        "web-egress-with-exec",
        "inline-secret",
        "gpu-capabilities-broad",
        "published-port",
        "runsc-permissive-flags",
        "sandbox-root",
        "sandbox-without-limits",
        "service-beyond-appliance",
        "runsc-host-uds-all",
    ];
    for lint in LINTS {
        assert!(tested.contains(&lint.code), "lint `{}` has no firing test", lint.code);
    }
}

#[test]
fn a_deny_lint_blocks_check_and_generate_until_allowed_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let secret = BASE.replacen(
        "[appliance]",
        "# token: ghp_abcdefghijklmnopqrstuvwxyz012345\n[appliance]",
        1,
    );
    write_spec(dir.path(), &secret);
    for command in [&["check"][..], &["generate"][..]] {
        let output = run_in(dir.path(), command);
        assert_eq!(output.status.code(), Some(2), "{command:?}: {}", stderr(&output));
        assert_contains(stderr(&output), "deny[inline-secret] spec: line 2");
    }
    assert!(
        !dir.path().join("generated").exists(),
        "generate wrote despite a deny lint"
    );

    // Unknown codes and empty reasons are spec errors.
    write_spec(
        dir.path(),
        &format!("{secret}\n[lints]\nallow = {{ inline-secrets = \"typo\" }}\n"),
    );
    let output = run_in(dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(2));
    assert_contains(stderr(&output), "unknown lint `inline-secrets`");
    write_spec(
        dir.path(),
        &format!("{secret}\n[lints]\nallow = {{ inline-secret = \"\" }}\n"),
    );
    let output = run_in(dir.path(), &["check"]);
    assert_contains(stderr(&output), "allowed without a reason");

    // With a reason it passes, and check shows it.
    let reason = "a revoked token kept as a test fixture";
    write_spec(
        dir.path(),
        &format!("{secret}\n[lints]\nallow = {{ inline-secret = \"{reason}\" }}\n"),
    );
    let output = run_in(dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_contains(stderr(&output), "allowed[inline-secret]");
    assert_contains(stderr(&output), reason);
}

#[test]
fn warn_lints_do_not_block() {
    let text = crate::support::federated_solo_spec();
    let found = findings(&text);
    assert!(found.iter().all(|f| f.severity == Severity::Warn && !f.blocks()));
}

#[test]
fn explain_shows_findings_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let text = crate::support::federated_solo_spec();
    let reason = "this appliance talks to the team's homeserver";
    write_spec(
        dir.path(),
        &format!("{text}\n[lints]\nallow = {{ matrix-federation = \"{reason}\" }}\n"),
    );
    let output = run_in(dir.path(), &["explain", "--format", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let lints = json["lints"].as_array().unwrap();
    assert_eq!(lints.len(), 1, "{lints:?}");
    assert_eq!(lints[0]["code"], "matrix-federation");
    assert_eq!(lints[0]["allowed"], reason);
    let output = run_in(dir.path(), &["explain"]);
    let text = crate::support::stdout(&output);
    assert!(
        text.contains("matrix-federation (allowed: this appliance talks"),
        "{text}"
    );
}
