//! The CLI as users drive it: exit codes, messages, files written.

use crate::support::{assert_contains, assert_lacks, first_line_of, run_in, stderr, stdout};

/// Every subcommand, in `--help` order.
const SUBCOMMANDS: [&str; 19] = [
    "init",
    "check",
    "generate",
    "inspect",
    "explain",
    "bootstrap",
    "doctor",
    "build",
    "flash",
    "gce",
    "pair",
    "pair-serve",
    "warden",
    "audit",
    "admin",
    "backup",
    "restore",
    "upgrade",
    "completions",
];

#[test]
fn the_subcommand_list_here_is_complete() {
    // So the tests below cover a subcommand as soon as it is added.
    use clap::CommandFactory;
    let cli = agent_appliance::operator::cli::Cli::command();
    let names: Vec<&str> = cli.get_subcommands().map(clap::Command::get_name).collect();
    assert_eq!(names, SUBCOMMANDS);
}

#[test]
fn help_lists_every_subcommand() {
    let output = run_in(&crate::support::root(), &["--help"]);
    assert!(output.status.success());
    let help = stdout(&output);
    for command in SUBCOMMANDS {
        assert!(
            help.lines()
                .any(|line| line.trim_start().starts_with(&format!("{command} "))),
            "--help lacks `{command}`:\n{help}"
        );
    }
}

#[test]
fn every_subcommand_has_help() {
    for command in SUBCOMMANDS {
        let output = run_in(&crate::support::root(), &[command, "--help"]);
        assert!(output.status.success(), "`{command} --help`: {}", stderr(&output));
        let help = stdout(&output);
        assert!(
            help.contains(&format!("Usage: appliance {command}")),
            "`{command} --help`:\n{help}"
        );
    }
}

#[test]
fn check_accepts_the_default_spec() {
    let output = run_in(&crate::support::root(), &["check"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_contains(
        stdout(&output),
        "appliance `magi` is valid: 2 hosts, 4 agents, 8 sandboxes, 1 room\n",
    );
}

#[test]
fn init_writes_a_valid_starter_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(dir.path(), &["init"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let spec = std::fs::read_to_string(dir.path().join("appliance.toml")).unwrap();
    assert!(run_in(dir.path(), &["check"]).status.success());

    std::fs::write(dir.path().join("appliance.toml"), "# mine\n").unwrap();
    let again = run_in(dir.path(), &["init"]);
    assert_eq!(again.status.code(), Some(1));
    assert_contains(
        stderr(&again),
        "error: `appliance.toml` exists already\nhint: `appliance init` never overwrites",
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("appliance.toml")).unwrap(),
        "# mine\n"
    );
    assert!(spec.contains("[agents."));
}

#[test]
fn init_creates_the_directories_of_its_spec() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(dir.path(), &["init", "--spec", "a/b/appliance.toml"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "wrote a/b/appliance.toml; next: `appliance check` and `appliance generate`\n"
    );
    let check = run_in(dir.path(), &["check", "--spec", "a/b/appliance.toml"]);
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn inspect_json_is_versioned_and_complete() {
    let output = run_in(&crate::support::root(), &["inspect", "--format", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["schema_version"], 1);
    let casper_exec = &json["hosts"]["hub"]["docker_run_args"]["casper-exec"];
    assert!(
        casper_exec
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--runtime=runsc-dind")
    );
    assert_eq!(json["hosts"]["hub"]["runtime_args"]["runsc"][0], "--platform=systrap");
    assert_eq!(json["bootstrap"]["rooms"][0]["alias"], "#magi:magi");
    assert_eq!(json["agents"]["casper"]["model"], "qwen3.5:27b-q4_K_M");
    let sandboxes = json["hosts"]["hub"]["sandboxes"].as_array().unwrap();
    let names: Vec<&str> = sandboxes.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "ollama",
            "searxng",
            "webextract",
            "balthasar",
            "casper",
            "casper-exec",
            "melchior"
        ]
    );
    // Ollama is a sandbox of its own, with nvproxy, not a host service.
    assert_eq!(sandboxes[0]["runtime"], "runsc-gpu");
    assert_eq!(json["inference"]["sandbox"], "ollama");
}

#[test]
fn inspect_filters_by_host_and_rejects_unknown_ones() {
    let output = run_in(&crate::support::root(), &["inspect", "--host", "pi"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("host pi:") && !text.contains("host hub:"), "{text}");
    assert_contains(&text, "sandbox balthasar-pi");

    let unknown = run_in(&crate::support::root(), &["inspect", "--host", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        stderr(&unknown),
        "error: no host `nope` in the spec\nhint: hosts are: `hub`, `pi`\n"
    );
}

#[test]
fn inspect_text_uses_the_specs_spellings() {
    let output = run_in(&crate::support::root(), &["inspect"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_contains(&text, "\nhost hub: gce x86_64-linux, gVisor platform systrap\n");
    assert_contains(&text, "\nhost pi: rpi4 aarch64-linux, gVisor platform systrap\n");
    assert_contains(&text, "\nagent balthasar-pi (picoclaw) on host pi");
    assert_contains(&text, "\nagent casper (hermes) on host hub");
    assert_contains(&text, "\nagent melchior (openclaw) on host hub");
    // Rust's names for the same values, which a user never writes.
    for debug in [
        "Gce",
        "Rpi4",
        "X86_64Linux",
        "Aarch64Linux",
        "Systrap",
        "Openclaw",
        "Picoclaw",
        "(Hermes)",
    ] {
        assert!(!text.contains(debug), "`{debug}` in inspect output:\n{text}");
    }
}

#[test]
fn inspect_text_puts_every_warning_on_a_line_of_its_own() {
    // edge-pi's scout has a warning (the github skill's token).
    let spec = "examples/edge-pi/appliance.toml";
    let output = run_in(&crate::support::root(), &["inspect", "--spec", spec]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.ends_with("state in /var/lib/appliance\n"), "{text:?}");
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("warning[")).collect();
    assert!(!warnings.is_empty(), "{text}");
    for line in warnings {
        assert!(line.starts_with("  warning["), "glued warning: {line:?}");
    }
}

#[test]
fn completions_cover_the_subcommands() {
    let bash = run_in(&crate::support::root(), &["completions", "bash"]);
    assert!(bash.status.success(), "{}", stderr(&bash));
    let bash = stdout(&bash);
    let fish = run_in(&crate::support::root(), &["completions", "fish"]);
    assert!(fish.status.success(), "{}", stderr(&fish));
    let fish = stdout(&fish);
    for command in SUBCOMMANDS {
        assert!(
            bash.contains(&format!("appliance,{command})")),
            "bash lacks `{command}`"
        );
        assert!(fish.contains(&format!("-a \"{command}\"")), "fish lacks `{command}`");
    }
}

#[test]
fn every_agent_reaches_ollama_where_it_listens() {
    // Agents on the inference host reach Ollama where it listens (its
    // sandbox's bridge address, or the host service's one address); agents
    // on other hosts at the overlay address its port is published on.
    for spec in [
        "appliance.toml",
        "examples/existing-host/appliance.toml",
        "examples/edge-pi/appliance.toml",
    ] {
        let output = run_in(
            &crate::support::root(),
            &["inspect", "--format", "json", "--spec", spec],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let inference = &json["inference"];
        let url = |address: &serde_json::Value| format!("http://{}:{}", address.as_str().unwrap(), inference["port"]);
        for (name, agent) in json["agents"].as_object().unwrap() {
            let expected = if agent["host"] == inference["host"] {
                url(&inference["bind_address"])
            } else {
                url(&inference["overlay_address"])
            };
            assert_eq!(
                agent["inference_url"].as_str().unwrap(),
                expected,
                "{spec}: agent `{name}`"
            );
        }
    }
}

/// `appliance explain ARGS` of the default spec, which succeeds: its stdout.
fn explained(args: &[&str]) -> String {
    let output = run_in(&crate::support::root(), &[&["explain"], args].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

#[test]
fn explain_names_an_agent_or_says_which_exist() {
    let root = crate::support::root();
    let text = explained(&["balthasar"]);
    assert!(text.starts_with("sandbox balthasar on host hub"), "{text}");
    assert_contains(&text, "domains through the egress proxy: api.github.com");
    // Other sandboxes appear only in its denied list.
    assert_lacks(&text, "sandbox melchior on host");
    // Its GitHub token: used, added by the proxy, never held.
    let uses = explain_rows(&text, "uses");
    assert_eq!(uses.len(), 1, "{text}");
    assert!(
        uses[0].starts_with("github (GH_TOKEN) on api.github.com, uploads.github.com: added by the egress proxy of host hub from /var/lib/appliance/credentials/github-token"),
        "{text}"
    );
    assert_eq!(
        explain_rows(&text, "holds"),
        [
            "none: GH_TOKEN=appliance-placeholder-balthasar-github is a placeholder; the github credential never enters the sandbox"
        ]
    );
    assert!(
        !explain_rows(&text, "secrets")
            .iter()
            .any(|row| row.contains("GH_TOKEN")),
        "{text}"
    );
    let output = run_in(&root, &["explain", "nobody"]);
    assert_eq!(output.status.code(), Some(1));
    assert_contains(stderr(&output), "no agent `nobody`");
    assert_contains(stderr(&output), "`balthasar`");
}

/// The rows of one key of an `explain` text table: its first line and the
/// continuation lines under it.
fn explain_rows<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("  {key:<14} ")) {
            inside = true;
            rows.push(rest);
        } else if inside && line.starts_with(&" ".repeat(17)) {
            rows.push(line.trim_start());
        } else {
            inside = false;
        }
    }
    rows
}

/// issue 19, item 7: a `web` sandbox is told what it may never reach.
#[test]
fn explain_says_what_a_web_sandbox_is_denied() {
    let text = explained(&["melchior"]);
    let denied = explain_rows(&text, "denied");
    let has = |needle: &str| denied.iter().any(|row| row.contains(needle));
    for needle in [
        "169.254.0.0/16: link-local, including the cloud metadata server 169.254.169.254",
        "10.0.0.0/8: private",
        "172.16.0.0/12: private",
        "192.168.0.0/16: private",
        "127.0.0.0/8: loopback",
        "fe80::/10: link-local",
        "sandbox casper at 10.88.0.11",
        "sandbox ollama at 10.88.0.2 beyond tcp/11434",
        "host hub tcp/22: SSH",
        "through the proxy, ports other than 80, 443",
    ] {
        assert!(has(needle), "no `{needle}` in the denied rows:\n{}", denied.join("\n"));
    }
    // What it may open is not among them.
    assert!(!has("host hub tcp/8008"), "{}", denied.join("\n"));
    assert!(!has("sandbox melchior"), "{}", denied.join("\n"));

    let json: serde_json::Value = serde_json::from_str(&explained(&["casper", "--format", "json"])).unwrap();
    let exec = json["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "casper-exec")
        .unwrap();
    assert_eq!(exec["denied"][0]["kind"], "network", "{exec}");
    assert_eq!(exec["denied"][0]["enforced_by"][0], "no-network", "{exec}");
}

/// The block of `docs/sandboxes.md` between the dot markers.
fn docs_picture(docs: &str) -> Option<&str> {
    let begin = "<!-- appliance explain --format dot: begin -->\n```dot\n";
    let end = "```\n<!-- appliance explain --format dot: end -->";
    let start = docs.find(begin)? + begin.len();
    let stop = start + docs[start..].find(end)?;
    Some(&docs[start..stop])
}

/// issue 19, item 7: the docs show the default spec's picture, as drawn.
#[test]
fn the_docs_picture_is_what_explain_draws() {
    let root = crate::support::root();
    let drawn = explained(&["--format", "dot"]);
    let docs = std::fs::read_to_string(root.join("docs/sandboxes.md")).unwrap();
    let shown = docs_picture(&docs).expect("docs/sandboxes.md has no `appliance explain --format dot` block");
    assert!(
        shown == drawn,
        "docs/sandboxes.md's picture is not what `appliance explain --format dot` draws\n\
         hint: replace the block between the `appliance explain --format dot` markers with its output\n\
         --- drawn:\n{drawn}"
    );
}

/// Graphviz reads what `explain --format dot` writes, for every shipped
/// spec (and one agent's part of the default).
#[test]
fn graphviz_reads_the_explain_graph() {
    let Some(dot) = crate::support::require_tool(
        "dot",
        "checks `appliance explain --format dot` parses; Debian package graphviz",
    ) else {
        return;
    };
    let root = crate::support::root();
    let mut runs: Vec<Vec<&str>> = vec![vec!["explain", "casper", "--format", "dot"]];
    for spec in [
        "appliance.toml",
        "examples/edge-pi/appliance.toml",
        "examples/existing-host/appliance.toml",
        "examples/minimal/appliance.toml",
    ] {
        runs.push(vec!["explain", "--format", "dot", "--spec", spec]);
    }
    for args in runs {
        let output = run_in(&root, &args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let mut child = std::process::Command::new(&dot)
            .arg("-Tcanon")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), &output.stdout).unwrap();
        let parsed = child.wait_with_output().unwrap();
        assert!(
            parsed.status.success() && parsed.stderr.is_empty(),
            "{args:?}: dot refused the graph: {}\n{}",
            stderr(&parsed),
            stdout(&output)
        );
    }
}

/// What a hostile spec tries to print: a line of its own that looks like
/// ours, and a colour escape for the terminal.
const FORGED: &str = r"\n error: forged \u001b[31m";

fn assert_inert(text: &str) {
    assert!(
        !text.contains('\x1b'),
        "an escape sequence reached the terminal:\n{text:?}"
    );
    assert!(
        !text.contains('\r'),
        "a carriage return reached the terminal:\n{text:?}"
    );
    assert!(
        !text.lines().any(|line| line.trim_start().starts_with("error: forged")),
        "the spec forged a line:\n{text}"
    );
}

fn spec_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("appliance.toml"), text).unwrap();
    dir
}

#[test]
fn a_lint_reason_cannot_forge_lines_or_send_escapes() {
    // A reason with control characters is refused (spec validation); the
    // refusal quotes nothing that acts on the terminal.
    let spec = format!(
        "{}\n[lints]\nallow = {{ matrix-federation = \"we federate on purpose{FORGED}\" }}\n",
        crate::support::federated_solo_spec()
    );
    let dir = spec_dir(&spec);
    let check = run_in(dir.path(), &["check"]);
    assert_eq!(check.status.code(), Some(2), "{}", stderr(&check));
    let err = stderr(&check);
    assert_inert(&err);
    assert_contains(
        &err,
        "the reason for lint `matrix-federation` contains the control character",
    );
    // A reason the validation lets through reaches the output (escaping
    // itself: the unit tests in src/common/term.rs).
    let spec = format!(
        "{}\n[lints]\nallow = {{ matrix-federation = \"we federate on purpose\" }}\n",
        crate::support::federated_solo_spec()
    );
    let dir = spec_dir(&spec);
    let explain = run_in(dir.path(), &["explain"]);
    assert!(explain.status.success(), "{}", stderr(&explain));
    assert_contains(stdout(&explain), "allowed: we federate on purpose");
}

#[test]
fn a_rejected_name_cannot_forge_lines_or_send_escapes() {
    let spec =
        crate::support::federated_solo_spec().replace("[agents.helper]", &format!("[agents.\"helper{FORGED}\"]"));
    let dir = spec_dir(&spec);
    let check = run_in(dir.path(), &["check"]);
    assert_eq!(check.status.code(), Some(2), "{}", stderr(&check));
    let err = stderr(&check);
    assert_inert(&err);
    assert_contains(&err, "helper\\n error: forged \\u{1b}[31m");
    assert!(err.ends_with("nothing was written\n"), "{err}");
}

/// Runs `appliance args` with stdout into a pipe whose reader closes it
/// after one line (`| head -1`); returns the exit status and stderr.
fn with_stdout_closed_early(dir: &std::path::Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = crate::support::appliance()
        .args(args)
        .current_dir(dir)
        .env_remove("APPLIANCE_SPEC")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = first_line_of(&mut child);
    // The read end is closed here: every later write gets EPIPE.
    assert!(!first.is_empty());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap(), err)
}

#[test]
fn a_reader_that_stops_early_is_not_a_panic() {
    // More output than a pipe buffers (64 KiB): many agents with long
    // names, each with its sandboxes and docker arguments.
    let mut spec = crate::support::federated_solo_spec().replace("federation = true", "federation = false");
    let mut members = vec!["\"@owner\"".to_string()];
    for n in 0..150 {
        spec.push_str(&format!(
            "\n[agents.agent-with-a-long-name-{n}]\nkind = \"picoclaw\"\nhost = \"box\"\n"
        ));
        members.push(format!("\"agent-with-a-long-name-{n}\""));
    }
    let spec = spec.replace(
        "members = [\"helper\", \"@owner\"]",
        &format!("members = [\"helper\", {}]", members.join(", ")),
    );
    let dir = spec_dir(&spec);
    let full = run_in(dir.path(), &["inspect"]);
    assert!(full.status.success(), "{}", stderr(&full));
    assert!(full.stdout.len() > 128 * 1024, "{} bytes", full.stdout.len());
    for args in [
        &["inspect"][..],
        &["inspect", "--format", "json"],
        &["explain"],
        &["completions", "bash"],
    ] {
        let (status, err) = with_stdout_closed_early(dir.path(), args);
        assert_eq!(status.code(), Some(0), "`{args:?}`: {err}");
        assert!(err.is_empty(), "`{args:?}` said: {err}");
    }
}

#[test]
fn a_missing_or_directory_spec_exits_2_with_the_os_error_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run_in(dir.path(), &["check"]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing),
        "error: failed to read spec `appliance.toml`\n  No such file or directory (os error 2)\n\
         hint: run `appliance init` to write one, or pass `--spec PATH`\n"
    );
    std::fs::create_dir(dir.path().join("spec")).unwrap();
    let directory = run_in(dir.path(), &["inspect", "--spec", "spec"]);
    assert_eq!(directory.status.code(), Some(2));
    assert_eq!(
        stderr(&directory),
        "error: failed to read spec `spec`\n  Is a directory (os error 21)\n\
         hint: pass the spec file itself: `--spec spec/appliance.toml`\n"
    );
}

/// Runs `appliance check --spec spec` and gives up after 20 seconds.
fn check_promptly(spec: &std::path::Path) -> std::process::Output {
    let output = std::process::Command::new("timeout")
        .args(["20", env!("CARGO_BIN_EXE_appliance"), "check", "--spec"])
        .arg(spec)
        .env_remove("APPLIANCE_SPEC")
        .output()
        .unwrap();
    assert_ne!(
        output.status.code(),
        Some(124),
        "`check --spec {}` hung",
        spec.display()
    );
    output
}

#[test]
fn a_device_a_fifo_or_a_huge_file_as_spec_ends_promptly() {
    let zero = check_promptly(std::path::Path::new("/dev/zero"));
    assert_eq!(zero.status.code(), Some(2));
    assert_eq!(
        stderr(&zero),
        "error: failed to read spec `/dev/zero`\n  it is a character device, not a regular file\n\
         hint: a spec is a TOML file: save it to a file and pass that with `--spec PATH`\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    let output = check_promptly(&fifo);
    assert_eq!(output.status.code(), Some(2));
    assert_contains(stderr(&output), "\n  it is a FIFO (named pipe), not a regular file\n");

    // Sparse: 64 MiB on paper, nothing on disk.
    let huge = dir.path().join("huge.toml");
    std::fs::File::create(&huge).unwrap().set_len(64 << 20).unwrap();
    let output = check_promptly(&huge);
    assert_eq!(output.status.code(), Some(2));
    assert_contains(stderr(&output), "\n  it is larger than 1 MiB, far more than any spec\n");
}

/// The relative links of a Markdown file: `](target)` without a scheme or
/// a bare `#anchor`, the anchor cut off.
fn relative_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .map(|target| target.split('#').next().unwrap_or_default().to_string())
        .filter(|target| !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:"))
        .collect()
}

#[test]
fn readme_and_docs_link_only_to_files_that_exist() {
    // The README points newcomers into docs/; a moved section must not
    // leave a dangling link behind.
    let root = crate::support::root();
    let mut files = vec![root.join("README.md"), root.join("SECURITY.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let dir = file.parent().unwrap();
        for link in relative_links(&text) {
            if !dir.join(&link).exists() {
                broken.push(format!("{}: {link}", file.strip_prefix(&root).unwrap().display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to missing files:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_names_every_subcommand_and_stays_short() {
    let readme = std::fs::read_to_string(crate::support::root().join("README.md")).unwrap();
    let cli = std::fs::read_to_string(crate::support::root().join("docs/cli.md")).unwrap();
    for name in SUBCOMMANDS {
        let row = format!("| `{name}");
        assert!(readme.contains(&row), "README.md's command table lacks `{name}`");
        assert!(
            cli.contains(&format!("| `appliance {name}")),
            "docs/cli.md lacks `appliance {name}`"
        );
    }
    // The two commands a newcomer needs, as CI runs them.
    assert!(readme.contains("cargo run --release -- generate"));
    assert!(readme.contains("bash scripts/test.sh"));
    let ci = std::fs::read_to_string(crate::support::root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("bash scripts/test.sh"),
        ".ci/run no longer runs the README's test command"
    );
    let lines = readme.lines().count();
    assert!(
        lines <= 150,
        "README.md has {lines} lines; move detail into docs/ (at most 150)"
    );
}

/// `explain` names the warden, the one service outside the sandboxes that
/// acts on the agents: as what it runs, what it may do, what its owner could.
#[test]
fn explain_says_what_the_warden_may_do() {
    let root = crate::support::root();
    let text = explained(&[]);
    assert_contains(
        &text,
        "warden (appliance-warden.service) on host hub: outside the sandboxes",
    );
    let runs_as = explain_rows(&text, "runs as");
    assert!(
        runs_as[0].contains("root, outside every sandbox, as Matrix account @appliance:magi"),
        "{runs_as:?}"
    );
    let owned = explain_rows(&text, "if owned");
    assert!(
        owned.iter().any(|r| r.contains("mute or unmute any agent")),
        "{owned:?}"
    );
    let output = run_in(&root, &["explain", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["host_services"][0]["host"], "hub");
}
