//! `appliance build` and its progress parser against a real `nix build`
//! (Debian's nix-bin 2.8): derivations that need no nixpkgs, built in
//! throwaway stores.

use std::path::Path;
use std::process::Command;

use agent_appliance::operator::nixlog::Progress;

use crate::support::{appliance, assert_contains, assert_lacks, first_line_of, require_tool, root, stderr, stdout};

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

/// `nix build` of `attribute` of tests/fixtures/nix-log/drv.nix in a
/// throwaway store, its log as internal JSON on stderr; `None` without nix.
fn fixture_build_logged(attribute: &str) -> Option<std::process::Output> {
    nix()?;
    let dir = tempfile::tempdir().unwrap();
    let output = nix_build_in(dir.path())
        .args(["--log-format", "internal-json", "--no-link", "-f"])
        .arg(root().join("tests/fixtures/nix-log/drv.nix"))
        .arg(attribute)
        .output()
        .unwrap();
    Some(output)
}

#[test]
fn the_parser_counts_a_real_nix_build() {
    let Some(output) = fixture_build_logged("b") else {
        return;
    };
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
    let Some(output) = fixture_build_logged("fail") else {
        return;
    };
    assert!(!output.status.success());
    let progress = Progress::from_log(&String::from_utf8_lossy(&output.stderr));
    let failed = progress.failed_derivations();
    assert_eq!(failed.len(), 1, "{:?}", progress.errors);
    assert!(failed[0].ends_with("-nixlog-fail.drv"));
    assert_eq!(progress.log_tail(&failed[0]), ["line one", "line two"]);
    assert_eq!(progress.builds().failed, 1);
}

/// A binary cache served over HTTP on loopback from `dir`, for as long as
/// the value lives: enough HTTP/1.1 for Nix (GET and HEAD, one request per
/// connection).
struct LoopbackCache {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackCache {
    fn serve(dir: &Path) -> LoopbackCache {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (dir, flag) = (dir.to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                // Skip the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut parts = request.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
                let body = std::fs::read(dir.join(path.trim_start_matches('/'))).ok();
                let head = match &body {
                    Some(body) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ),
                    None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
                };
                let _ = stream.write_all(head.as_bytes());
                if let (Some(body), "GET") = (&body, method) {
                    let _ = stream.write_all(body);
                }
            }
        });
        LoopbackCache {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LoopbackCache {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn the_parser_counts_a_real_fetch_from_a_binary_cache() {
    if nix().is_none() {
        return;
    }
    let built = tempfile::tempdir().unwrap();
    let output = nix_build_in(built.path())
        .args(["--no-link", "--json", "-f"])
        .arg(root().join("tests/fixtures/nix-log/drv.nix"))
        .arg("b")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let out = agent_appliance::operator::commands::build::output_paths(&stdout(&output)).unwrap();
    let cache = built.path().join("cache");
    let copy = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command", "copy", "--from"])
        .arg(built.path().join("store"))
        .arg("--to")
        .arg(format!("file://{}", cache.display()))
        .arg(&out[0])
        .env("HOME", built.path())
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", stderr(&copy));

    let server = LoopbackCache::serve(&cache);
    let fresh = tempfile::tempdir().unwrap();
    let mut fetch = Command::new("nix");
    fetch
        .args(["--extra-experimental-features", "nix-command", "build", "--store"])
        .arg(fresh.path().join("store"))
        .args(["--option", "substituters", &format!("http://127.0.0.1:{}", server.port)])
        .args(["--option", "require-sigs", "false"])
        .args(["--option", "build-users-group", ""])
        .args(["--log-format", "internal-json", "--no-link", "-f"])
        .arg(root().join("tests/fixtures/nix-log/drv.nix"))
        .arg("b")
        .env("HOME", fresh.path());
    let output = fetch.output().unwrap();
    drop(server);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let progress = Progress::from_log(&log);
    assert_eq!(progress.builds().done, 0, "fetched, not built: {log}");
    let fetches = progress.fetches();
    assert_eq!((fetches.done, fetches.expected, fetches.failed), (1, 1, 0), "{log}");
    let downloads = progress.downloads();
    assert!(
        downloads.done > 0 && downloads.done == downloads.expected,
        "{downloads:?}"
    );
    assert!(
        progress.counts().starts_with("0/0 built, 1/1 fetched, "),
        "{}",
        progress.counts()
    );
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
    build_command(checkout, args)
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
        // Nix 2.8's evaluation cache sometimes answers `nix build --json`
        // after a failed build with "attribute 'packages.x86_64-linux.packages'
        // is unexpectedly missing" instead of the build's error (the same
        // directory passes and fails in turn); the tests want the build's.
        .args(["--option", "eval-cache", "false"])
        .env("NIX_STORE_DIR", store.join("store"))
        .env("NIX_STATE_DIR", store.join("state"))
        .env("NIX_LOG_DIR", store.join("log"))
        .env("NIX_CONF_DIR", store)
        .env("HOME", store)
        .output()
        .unwrap()
}

/// `appliance build --spec <checkout>/appliance.toml ARGS`, with no
/// `APPLIANCE_SPEC` from the caller's environment.
fn build_command(checkout: &Path, args: &[&str]) -> Command {
    let mut command = appliance();
    command
        .args(["build", "--spec"])
        .arg(checkout.join("appliance.toml"))
        .args(args)
        .env_remove("APPLIANCE_SPEC");
    command
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
    assert_contains(&err, "[0/1 built] building stand-in-gce-image\n");
    assert_contains(&err, "\n1/1 built\n");
    assert_contains(&err, "stand-in-gce-image: buildPhase\n");
    let out = stdout(&output);
    let store_dir = store.path().join("store");
    assert!(
        out.starts_with(&format!("built {}/", store_dir.display())) && out.contains("-stand-in-gce-image (9 B)\n"),
        "{out}"
    );
    let link = checkout.path().join("result-hub");
    assert_contains(&out, format!("result: {}\n", link.display()));
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
    assert_contains(&err, "error: nix build failed (exit code 1)\n");
    assert_contains(&err, "failed with exit code 4");
    assert_contains(
        &err,
        "last 2 log lines of stand-in-gce-image:\n  | writing the image\n  | disk full\n",
    );
}

#[test]
fn build_refuses_a_stale_generated_tree() {
    let checkout = stand_in_checkout();
    let options = checkout.path().join("generated/hosts/hub/options.json");
    let text = std::fs::read_to_string(&options).unwrap();
    std::fs::write(&options, format!("{text}\n")).unwrap();
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
    assert_contains(&err, "hint: run `appliance generate`");
}

#[test]
fn build_rejects_an_unknown_target() {
    let output = crate::support::run_in(&root(), &["build", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: no host `nope` in the spec"),
        "{}",
        stderr(&output)
    );
}

/// A stand-in `nix` on PATH that records every call and says it is
/// `version`; anything but `--version` runs `otherwise` (shell) and succeeds.
fn fake_nix(dir: &Path, version: &str, otherwise: &str) -> (String, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.join("nix.log");
    let script = bin.join("nix");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# stand-in for nix: records its arguments\necho \"$*\" >> '{}'\n\
             if [ \"$1\" = --version ]; then echo 'nix (Nix) {version}'; else {otherwise}; fi\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    (path, log)
}

/// The stand-in checkout with the real flake's lock, which pins nixpkgs.
fn checkout_pinning_nixpkgs() -> tempfile::TempDir {
    let checkout = stand_in_checkout();
    std::fs::copy(root().join("flake.lock"), checkout.path().join("flake.lock")).unwrap();
    checkout
}

fn build_with_path(checkout: &Path, path: &str, args: &[&str]) -> std::process::Output {
    build_command(checkout, args).env("PATH", path).output().unwrap()
}

#[test]
fn a_nix_older_than_the_flake_needs_is_named_before_it_runs() {
    let checkout = checkout_pinning_nixpkgs();
    let tools = tempfile::tempdir().unwrap();
    let (path, log) = fake_nix(tools.path(), "2.8.0", "true");
    for args in [&["gce-image", "--dry-run"][..], &["gce-image"]] {
        std::fs::remove_file(&log).ok();
        let output = build_with_path(checkout.path(), &path, args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&output),
            "error: Nix 2.8.0 is too old for this flake: its pinned nixpkgs needs Nix 2.18 or later\n\
             hint: install a newer Nix (https://nixos.org/download; Debian's `nix-bin` is older), or build on a machine that has one\n",
            "{args:?}"
        );
        // Asked for its version, and nothing else: no build, no fetch.
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "--version\n", "{args:?}");
    }
}

#[test]
fn a_nix_new_enough_is_then_asked_to_build() {
    let checkout = checkout_pinning_nixpkgs();
    let tools = tempfile::tempdir().unwrap();
    let (path, log) = fake_nix(tools.path(), "2.24.10", "true");
    let output = build_with_path(checkout.path(), &path, &["gce-image", "--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0], "--version");
    assert!(
        calls[1].contains("build --dry-run") && calls[1].contains("#packages.x86_64-linux.gce-image"),
        "{calls:?}"
    );
}

#[test]
fn a_dry_run_read_by_head_is_not_a_panic() {
    use std::io::Read;
    let checkout = checkout_pinning_nixpkgs();
    let tools = tempfile::tempdir().unwrap();
    // Nix's plain dry-run report of 4000 derivations: more than a pipe holds.
    let report = "echo 'these 4000 derivations will be built:' >&2; i=0; while [ $i -lt 4000 ]; do \
                  echo \"  /nix/store/00000000000000000000000000000000-derivation-number-$i.drv\" >&2; i=$((i+1)); done";
    let (path, _) = fake_nix(tools.path(), "2.24.10", report);
    let mut child = appliance()
        .args(["build", "--spec"])
        .arg(checkout.path().join("appliance.toml"))
        .args(["gce-image", "--dry-run"])
        .env("PATH", path)
        .env_remove("APPLIANCE_SPEC")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first = first_line_of(&mut child);
    assert_eq!(first, "4000 derivations to build, 0 paths to fetch\n");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert_lacks(&err, "panicked");
}
