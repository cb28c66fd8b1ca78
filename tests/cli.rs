//! The CLI as users drive it: exit codes, messages, files written.

use crate::common::{run_in, stderr, stdout};

/// Every subcommand, in `--help` order.
const SUBCOMMANDS: [&str; 16] = [
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
    "completions",
];

#[test]
fn the_subcommand_list_here_is_complete() {
    // So the tests below cover a subcommand as soon as it is added.
    use clap::CommandFactory;
    let cli = agent_appliance::cli::Cli::command();
    let names: Vec<&str> = cli.get_subcommands().map(clap::Command::get_name).collect();
    assert_eq!(names, SUBCOMMANDS);
}

#[test]
fn help_lists_every_subcommand() {
    let output = run_in(&crate::common::root(), &["--help"]);
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
        let output = run_in(&crate::common::root(), &[command, "--help"]);
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
    let output = run_in(&crate::common::root(), &["check"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("appliance `magi` is valid: 2 hosts, 4 agents, 8 sandboxes, 1 room\n"),
        "{}",
        stdout(&output)
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
    assert!(
        stderr(&again).contains("error: `appliance.toml` exists already\nhint: `appliance init` never overwrites"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("appliance.toml")).unwrap(),
        "# mine\n"
    );
    assert!(spec.contains("[agents."));
}

#[test]
fn inspect_json_is_versioned_and_complete() {
    let output = run_in(&crate::common::root(), &["inspect", "--format", "json"]);
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
    let output = run_in(&crate::common::root(), &["inspect", "--host", "pi"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("host pi:") && !text.contains("host hub:"), "{text}");
    assert!(text.contains("sandbox balthasar-pi"), "{text}");

    let unknown = run_in(&crate::common::root(), &["inspect", "--host", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        stderr(&unknown),
        "error: no host `nope` in the spec\nhint: hosts are: `hub`, `pi`\n"
    );
}

#[test]
fn inspect_text_uses_the_specs_spellings() {
    let output = run_in(&crate::common::root(), &["inspect"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("\nhost hub: gce x86_64-linux, gVisor platform systrap\n"),
        "{text}"
    );
    assert!(
        text.contains("\nhost pi: rpi4 aarch64-linux, gVisor platform systrap\n"),
        "{text}"
    );
    assert!(text.contains("\nagent balthasar-pi (picoclaw) on host pi"), "{text}");
    assert!(text.contains("\nagent casper (hermes) on host hub"), "{text}");
    assert!(text.contains("\nagent melchior (openclaw) on host hub"), "{text}");
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
    let output = run_in(&crate::common::root(), &["inspect", "--spec", spec]);
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
    let bash = run_in(&crate::common::root(), &["completions", "bash"]);
    assert!(bash.status.success(), "{}", stderr(&bash));
    let bash = stdout(&bash);
    let fish = run_in(&crate::common::root(), &["completions", "fish"]);
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
        let output = run_in(&crate::common::root(), &["inspect", "--format", "json", "--spec", spec]);
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

#[test]
fn explain_names_an_agent_or_says_which_exist() {
    let root = crate::common::root();
    let output = run_in(&root, &["explain", "balthasar"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("sandbox balthasar on host hub"), "{text}");
    assert!(
        text.contains("domains through the egress proxy: api.github.com"),
        "{text}"
    );
    // Other sandboxes appear only in its denied list.
    assert!(!text.contains("sandbox melchior on host"), "{text}");
    let output = run_in(&root, &["explain", "nobody"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("no agent `nobody`"), "{}", stderr(&output));
    assert!(stderr(&output).contains("`balthasar`"), "{}", stderr(&output));
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
    let root = crate::common::root();
    let output = run_in(&root, &["explain", "melchior"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
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

    let output = run_in(&root, &["explain", "casper", "--format", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
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
    let root = crate::common::root();
    let output = run_in(&root, &["explain", "--format", "dot"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let drawn = stdout(&output);
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
    let Some(dot) = crate::common::require_tool(
        "dot",
        "checks `appliance explain --format dot` parses; Debian package graphviz",
    ) else {
        return;
    };
    let root = crate::common::root();
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
