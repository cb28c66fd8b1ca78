//! Nix's own flake machinery (Nix 2.8 here).

#[allow(unused_imports)]
use super::*;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// What the flake reads to evaluate, copied out of the checkout: Nix then
/// sees exactly these files, whether or not the checkout is a git tree,
/// and never copies `target/`.
fn flake_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["flake.nix", "flake.lock", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root().join(file), dir.path().join(file)).unwrap();
    }
    for tree in ["generated", "images", "modules", "nix"] {
        copy_tree(&root().join(tree), &dir.path().join(tree));
    }
    dir
}

/// Runs `nix` with flakes enabled and a throwaway store, in `dir`.
fn run_nix_flake(dir: &Path, args: &[&str]) -> Option<(bool, String, String)> {
    let nix = require_tool(
        "nix",
        "Debian package `nix-bin`: evaluates the flake with Nix's flake machinery",
    )?;
    let store = tempfile::tempdir().unwrap();
    let output = Command::new(nix)
        .args(["--extra-experimental-features", "nix-command flakes", "--store"])
        .arg(store.path().join("store"))
        .args(args)
        .current_dir(dir)
        .env("HOME", store.path())
        .env("XDG_CACHE_HOME", store.path().join("cache"))
        .output()
        .unwrap();
    Some((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn nix_reads_the_lock_and_evaluates_the_flake() {
    let flake = flake_copy();
    let Some((ok, stdout, stderr)) = run_nix_flake(flake.path(), &["flake", "metadata", "--offline", "--json", "."])
    else {
        return;
    };
    assert!(ok, "{stderr}");
    let metadata: Value = serde_json::from_str(&stdout).unwrap();
    let locked = &metadata["locks"]["nodes"]["nixpkgs"]["locked"];
    assert_eq!(locked["rev"], "21a67dc470149f337cecafbe965d8d252a390518");

    let stub = tempfile::tempdir().unwrap();
    std::fs::write(
        stub.path().join("flake.nix"),
        "{ outputs = { self }: { lib = import ./lib.nix; }; }",
    )
    .unwrap();
    std::fs::write(stub.path().join("lib.nix"), STUB_LIB).unwrap();
    std::fs::write(stub.path().join("default.nix"), STUB_PKGS).unwrap();
    let stub_input = format!("path:{}", stub.path().display());
    let (ok, stdout, stderr) = run_nix_flake(
        flake.path(),
        &[
            "eval",
            "--json",
            "--no-write-lock-file",
            "--override-input",
            "nixpkgs",
            &stub_input,
            ".#packages",
            "--apply",
            "builtins.mapAttrs (_: builtins.attrNames)",
        ],
    )
    .unwrap();
    assert!(ok, "{stderr}");
    let packages: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        packages["x86_64-linux"],
        serde_json::json!(super::outputs::X86_64_PACKAGES)
    );
}

/// coreutils programs an entry-point script may call.
const COREUTILS: &[&str] = &[
    "cat", "chmod", "chown", "cp", "date", "head", "id", "ln", "ls", "mkdir", "mv", "rm", "seq", "sleep", "tail",
    "touch",
];

/// Where a shell line calls a program: its first word, a word after `|`,
/// `;`, `&&`, `||`, `!`, `then`, `do` or `else`, and the first word of a
/// `$(...)`.
fn commands_called(line: &str) -> BTreeSet<String> {
    let mut called = BTreeSet::new();
    let mut after_separator = true;
    for word in line.split_whitespace() {
        let keyword = matches!(
            word,
            "if" | "then" | "else" | "fi" | "for" | "while" | "do" | "done" | "!"
        );
        if after_separator && !keyword {
            called.insert(word.trim_end_matches(';').to_string());
        }
        for substitution in word.split("$(").skip(1) {
            let program = substitution.split([')', '"']).next().unwrap_or("");
            if !program.is_empty() {
                called.insert(program.to_string());
            }
        }
        // After `for` comes a variable name, not a program.
        after_separator = (keyword && word != "for") || matches!(word, "|" | "||" | "&&") || word.ends_with(';');
    }
    called
}

/// An image carries only its packages, and writeShellApplication puts only
/// its `runtimeInputs` on PATH: an entry-point script that calls `rm` or
/// `id` fails in the Nix image unless its package lists coreutils (the
/// Hermes entry point once did not; the rehearsal's Debian image has them,
/// so only this catches it).
#[test]
fn entry_point_scripts_have_the_programs_they_call() {
    let packages = root().join("nix/packages");
    let mut checked = 0;
    for entry in std::fs::read_dir(&packages).unwrap() {
        let path = entry.unwrap().path();
        let nix = std::fs::read_to_string(&path).unwrap_or_default();
        if path.extension().is_none_or(|e| e != "nix") || !nix.contains("writeShellApplication {") {
            continue;
        }
        let script = match nix.split("builtins.readFile ./").nth(1) {
            Some(rest) => std::fs::read_to_string(packages.join(rest.split(';').next().unwrap())).unwrap(),
            None => nix.split("text = ''").nth(1).unwrap_or_default().to_string(),
        };
        let inputs = nix
            .split("runtimeInputs = [")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .unwrap_or("");
        let mut in_heredoc: Option<String> = None;
        for line in script.lines() {
            if let Some(end) = &in_heredoc {
                if line.trim() == end {
                    in_heredoc = None;
                }
                continue;
            }
            if line.trim_start().starts_with('#') {
                continue;
            }
            if let Some(marker) = line.split("<<'").nth(1) {
                in_heredoc = Some(marker.split('\'').next().unwrap().to_string());
            }
            for command in commands_called(line) {
                if COREUTILS.contains(&command.as_str()) {
                    assert!(
                        inputs.split_whitespace().any(|i| i == "coreutils"),
                        "{} calls `{command}` (`{}`) but its runtimeInputs lack coreutils: [{inputs}]",
                        path.display(),
                        line.trim()
                    );
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "found only {checked} entry-point scripts in nix/packages");
}

#[test]
fn commands_called_finds_programs_where_a_shell_calls_them() {
    let called = |line: &str| commands_called(line).into_iter().collect::<Vec<_>>();
    assert_eq!(called(r#"rm -f "$HOME/x""#), ["rm"]);
    assert_eq!(called(r#"rm -rf "$dir/tmp/openclaw-$(id -u)""#), ["id", "rm"]);
    assert_eq!(called("  for _ in $(seq 1 150); do"), ["seq"]);
    assert_eq!(
        called(r#"if [ -f "$state" ] && ! node -e "$release"; then"#),
        ["[", "node"]
    );
    assert_eq!(called("docker info && sleep 1"), ["docker", "sleep"]);
    assert_eq!(called(r#"echo "remove it" >&2"#), ["echo"]);
}
