//! `appliance build` and its progress parser against a real `nix build`
//! (Debian's nix-bin 2.8): derivations that need no nixpkgs, built in
//! throwaway stores.

use std::path::Path;
use std::process::Command;

use agent_appliance::nixlog::Progress;

use crate::common::{appliance, require_tool, root, stderr, stdout};

fn nix() -> Option<std::path::PathBuf> {
    require_tool(
        "nix",
        "Debian package `nix-bin`: builds small derivations that need no nixpkgs",
    )
}

/// `nix build` with a private store under `dir` whose sandbox sees the
/// host's /bin/sh (the derivations' builder), and no binary cache.
fn nix_build_in(dir: &Path) -> Command {
    let mut command = Command::new("nix");
    command
        .args(["--extra-experimental-features", "nix-command", "build", "--store"])
        .arg(dir.join("store"))
        .args(["--option", "substituters", ""])
        .args(["--option", "build-users-group", ""])
        .args(["--option", "sandbox-paths", "/bin /lib /lib64 /usr"])
        .env("HOME", dir);
    command
}

#[test]
fn the_parser_counts_a_real_nix_build() {
    if nix().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = nix_build_in(dir.path())
        .args(["--log-format", "internal-json", "--no-link", "-f"])
        .arg(root().join("tests/fixtures/nix-log/drv.nix"))
        .arg("b")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let progress = Progress::from_log(&log);
    let builds = progress.builds();
    assert_eq!((builds.done, builds.expected, builds.failed), (2, 2, 0), "{log}");
    assert!(progress.errors.is_empty(), "{:?}", progress.errors);
    assert_eq!(progress.current_step(), None);
    let b = log
        .lines()
        .find_map(|l| l.split('"').find(|f| f.ends_with("-nixlog-b.drv")))
        .expect("b was built");
    assert_eq!(progress.log_tail(b), ["building b", "step two"]);
}

#[test]
fn the_parser_reads_a_real_failure() {
    if nix().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = nix_build_in(dir.path())
        .args(["--log-format", "internal-json", "--no-link", "-f"])
        .arg(root().join("tests/fixtures/nix-log/drv.nix"))
        .arg("fail")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let progress = Progress::from_log(&String::from_utf8_lossy(&output.stderr));
    let failed = progress.failed_derivations();
    assert_eq!(failed.len(), 1, "{:?}", progress.errors);
    assert!(failed[0].ends_with("-nixlog-fail.drv"));
    assert_eq!(progress.log_tail(&failed[0]), ["line one", "line two"]);
    assert_eq!(progress.builds().failed, 1);
}

/// A copy of the default spec with its generated tree, beside a flake with
/// no inputs whose `gce-image` is a stand-in derivation (a directory with
/// a `.raw.tar.gz` file), so `appliance build` runs a real `nix build`.
fn stand_in_checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("appliance.toml"), dir.path().join("appliance.toml")).unwrap();
    let generate = appliance()
        .args(["generate", "--spec"])
        .arg(dir.path().join("appliance.toml"))
        .output()
        .unwrap();
    assert!(generate.status.success(), "{}", stderr(&generate));
    std::fs::write(
        dir.path().join("flake.nix"),
        r#"{
  # Stand-in for the real flake: a GCE "image" that is one small file.
  outputs = { self }: {
    packages.x86_64-linux.gce-image = derivation {
      name = "stand-in-gce-image";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "echo '@nix {\"action\":\"setPhase\",\"phase\":\"buildPhase\"}' >&2; echo writing the image; /bin/mkdir $out; echo stand-in > $out/nixos-image-stand-in.raw.tar.gz" ];
    };
  };
}
"#,
    )
    .unwrap();
    dir
}

/// `appliance build` with Nix's store, state and config in `store`; the
/// sandbox is off because that store is not at /nix/store.
fn appliance_build(checkout: &Path, store: &Path, args: &[&str]) -> std::process::Output {
    appliance()
        .args(["build", "--spec"])
        .arg(checkout.join("appliance.toml"))
        .args(args)
        .args([
            "--",
            "--option",
            "sandbox",
            "false",
            "--option",
            "build-users-group",
            "",
        ])
        .args(["--option", "substituters", ""])
        .env("NIX_STORE_DIR", store.join("store"))
        .env("NIX_STATE_DIR", store.join("state"))
        .env("NIX_LOG_DIR", store.join("log"))
        .env("NIX_CONF_DIR", store)
        .env("HOME", store)
        .env_remove("APPLIANCE_SPEC")
        .output()
        .unwrap()
}

#[test]
fn build_runs_nix_and_reports_progress_result_and_size() {
    if nix().is_none() || std::env::consts::ARCH != "x86_64" {
        return;
    }
    let checkout = stand_in_checkout();
    let store = tempfile::tempdir().unwrap();

    let dry = appliance_build(checkout.path(), store.path(), &["gce-image", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_eq!(
        stdout(&dry),
        "1 derivation to build, 0 paths to fetch\n  build  stand-in-gce-image\n"
    );

    let output = appliance_build(checkout.path(), store.path(), &["gce-image"]);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("building hub (gce, x86_64-linux): ") && err.contains("#packages.x86_64-linux.gce-image\n"),
        "{err}"
    );
    // Not a terminal: one line per step instead of a bar.
    assert!(err.contains("[0/1 built] building stand-in-gce-image\n"), "{err}");
    assert!(err.contains("stand-in-gce-image: buildPhase\n"), "{err}");
    let out = stdout(&output);
    let store_dir = store.path().join("store");
    assert!(
        out.starts_with(&format!("built {}/", store_dir.display())) && out.contains("-stand-in-gce-image (9 B)\n"),
        "{out}"
    );
    let link = checkout.path().join("result-hub");
    assert!(out.contains(&format!("result: {}\n", link.display())), "{out}");
    assert!(
        out.contains("image: ") && out.contains("nixos-image-stand-in.raw.tar.gz\n"),
        "{out}"
    );
    assert!(std::fs::read_link(&link).unwrap().starts_with(&store_dir));
}

#[test]
fn build_shows_the_failing_log_tail() {
    if nix().is_none() || std::env::consts::ARCH != "x86_64" {
        return;
    }
    let checkout = stand_in_checkout();
    let flake = checkout.path().join("flake.nix");
    let text = std::fs::read_to_string(&flake).unwrap();
    std::fs::write(&flake, text.replace("/bin/mkdir $out;", "echo disk full >&2; exit 4;")).unwrap();
    let store = tempfile::tempdir().unwrap();
    let output = appliance_build(checkout.path(), store.path(), &["gce-image"]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("error: nix build failed (exit code 1)\n"), "{err}");
    assert!(err.contains("failed with exit code 4"), "{err}");
    assert!(
        err.contains("last 2 log lines of stand-in-gce-image:\n  | writing the image\n  | disk full\n"),
        "{err}"
    );
}

#[test]
fn build_refuses_a_stale_generated_tree() {
    let checkout = stand_in_checkout();
    let module = checkout.path().join("generated/hosts/hub/default.nix");
    let text = std::fs::read_to_string(&module).unwrap();
    std::fs::write(&module, format!("{text}\n# edited\n")).unwrap();
    // Nix is never started: no store options needed.
    let output = appliance()
        .args(["build", "--spec"])
        .arg(checkout.path().join("appliance.toml"))
        .arg("gce-image")
        .env_remove("APPLIANCE_SPEC")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("generated` is not what") && err.contains("(1 differing, 0 missing, 0 extra files)"),
        "{err}"
    );
    assert!(err.contains("hint: run `appliance generate`"), "{err}");
}

#[test]
fn build_rejects_an_unknown_target() {
    let output = crate::common::run_in(&root(), &["build", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: no host `nope` in the spec"),
        "{}",
        stderr(&output)
    );
}
