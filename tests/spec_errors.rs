//! Bad specs: every problem at file:line:column with a hint, exit code 2,
//! and nothing written.

use std::fs;

use crate::support::{assert_contains, assert_lacks, run_in, stderr};

/// Writes `spec` to a fresh directory and runs `appliance <args>` there.
fn run_spec(spec: &str, args: &[&str]) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("appliance.toml"), spec).unwrap();
    let output = run_in(dir.path(), args);
    (dir, output)
}

/// `appliance check` of `spec`: a spec error (exit 2); its stderr.
#[track_caller]
fn check_refuses(spec: &str) -> String {
    let (_dir, output) = run_spec(spec, &["check"]);
    assert_eq!(output.status.code(), Some(2));
    stderr(&output)
}

const VALID: &str = r#"
[appliance]
name = "t"

[hosts.box]
target = "nixos"

[matrix]
host = "box"
server-name = "t.internal"
admins = ["ana"]

[inference]
host = "box"
models = ["qwen3:4b"]

[agents.bot]
kind = "picoclaw"
host = "box"

[rooms.main]
members = ["bot", "@ana"]
"#;

#[test]
fn valid_spec_checks() {
    let (_dir, output) = run_spec(VALID, &["check"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn unknown_key_points_at_it() {
    let spec = VALID.replace("kind = \"picoclaw\"", "kind = \"picoclaw\"\ncolour = \"red\"");
    let (dir, output) = run_spec(&spec, &["generate"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_contains(&err, "error: appliance.toml:19:1: unknown field `colour`");
    assert_contains(&err, "hint: remove the key or fix its spelling");
    assert!(!dir.path().join("generated").exists(), "a bad spec must write nothing");
}

#[test]
fn every_problem_is_reported_with_location_and_hint() {
    let spec = r#"
[appliance]
name = "t"

[hosts.pi]
target = "rpi4"
gpu = { vendor = "nvidia", model = "l4", count = 1 }

[matrix]
host = "hub"
server-name = "t.internal"

[inference]
host = "pi"
models = ["qwen3:4b"]

[agents.Bad_Name]
kind = "picoclaw"
host = "pi"

[agents.coder]
kind = "hermes"
host = "pi"
model = "llama9:1b"
tools = ["code"]

[rooms.main]
members = ["coder", "nobody", "@ghost"]
"#;
    let err = check_refuses(spec);
    let expected = [
        "appliance.toml:7:7: host `pi` is a Raspberry Pi 4, which has no GPU gVisor can pass through",
        "appliance.toml:10:8: the Matrix homeserver is on unknown host `hub`",
        "appliance.toml:17:9: agent name `Bad_Name` must start with a lowercase letter",
        "appliance.toml:24:9: model `llama9:1b` is not served by `[inference]`",
        "appliance.toml:25:10: agent `coder` has the `code` tool but no sandbox to run code in",
        "appliance.toml:28:21: unknown room member `nobody`: no agent has that name",
        "appliance.toml:28:31: unknown room member `@ghost`: no admin `ghost` in `[matrix].admins`",
    ];
    for line in expected {
        assert!(err.contains(&format!("error: {line}")), "missing `{line}` in:\n{err}");
    }
    assert_eq!(
        err.matches("\nhint: ").count() + usize::from(err.starts_with("hint: ")),
        expected.len(),
        "{err}"
    );
    assert_contains(&err, "hint: add `code-execution = \"docker-in-gvisor\"` to the agent");
    assert_contains(&err, "7 problems in spec; nothing was written");
}

#[test]
fn port_clashes_and_duplicate_containers_are_errors() {
    let spec = VALID
        .replace("host = \"box\"\nmodels", "host = \"box\"\nport = 8008\nmodels")
        .replace(
            "[rooms.main]",
            "[agents.coder]\nkind = \"hermes\"\nhost = \"box\"\ncode-execution = \"docker-in-gvisor\"\n\n\
         [agents.coder-exec]\nkind = \"picoclaw\"\nhost = \"box\"\npublish = [22]\n\n[rooms.main]",
        );
    let err = check_refuses(&spec);
    assert_contains(
        &err,
        "port 8008 on host `box` is used by both the Matrix homeserver and Ollama",
    );
    assert_contains(&err, "port 22 on host `box` is used by both SSH and agent `coder-exec`");
    assert_contains(&err, "container name `coder-exec` is used twice");
}

#[test]
fn syntax_errors_are_located() {
    let err = check_refuses("[appliance]\nname = \n");
    assert!(err.starts_with("error: appliance.toml:2:"), "{err}");
}

#[test]
fn a_spec_that_is_not_utf8_is_a_located_spec_error() {
    // Line 3; the column counts characters, so `ü` (2 bytes) counts once:
    // `name = "tü` is 10 characters, the bad byte the 11th.
    let mut spec = b"# a spec\n[appliance]\nname = \"t\xc3\xbc".to_vec();
    spec.extend_from_slice(b"\xff\xfe\"\n");
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("appliance.toml"), &spec).unwrap();
    for command in ["check", "generate", "inspect"] {
        let output = run_in(dir.path(), &[command]);
        assert_eq!(output.status.code(), Some(2), "{command}");
        let err = stderr(&output);
        assert!(
            err.starts_with("error: appliance.toml:3:11: the spec is not valid UTF-8: byte 0xff"),
            "{command}: {err}"
        );
        assert!(err.contains("\nhint: "), "{command}: {err}");
        assert!(err.contains("UTF-8"), "{command}: {err}");
        assert!(!err.contains("appliance init"), "{command}: {err}");
        assert!(
            err.ends_with("1 problem in spec; nothing was written\n"),
            "{command}: {err}"
        );
    }
    assert!(!dir.path().join("generated").exists(), "a bad spec must write nothing");
}

#[test]
fn random_bytes_are_a_spec_error_at_the_first_bad_byte() {
    // What `head -c 300 /dev/urandom > appliance.toml` gives, made
    // deterministic: valid ASCII and a newline, then a lone continuation byte.
    let mut spec = b"ab\ncd".to_vec();
    spec.extend((0..300u32).map(|i| (0x80 + i % 0x40) as u8));
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("appliance.toml"), &spec).unwrap();
    let output = run_in(dir.path(), &["generate"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(
        err.starts_with("error: appliance.toml:2:3: the spec is not valid UTF-8: byte 0x80"),
        "{err}"
    );
    assert!(!dir.path().join("generated").exists(), "a bad spec must write nothing");
}

#[test]
fn missing_spec_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_in(dir.path(), &["check"]);
    // A spec problem like any other (README: `check` exits 2).
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_contains(&err, "failed to read spec `appliance.toml`");
    assert_contains(&err, "hint: run `appliance init`");
}

#[test]
fn the_bootstrap_account_name_is_reserved() {
    let spec = VALID.replace("admins = [\"ana\"]", "admins = [\"ana\", \"appliance\"]");
    let (_dir, output) = run_spec(&spec, &["check"]);
    assert_eq!(output.status.code(), Some(2));
    assert_contains(
        stderr(&output),
        "admin name `appliance` is reserved for the account that bootstraps the homeserver",
    );
}

#[test]
fn limits_capabilities_members_and_publish_are_checked() {
    let spec = VALID
        .replace(
            "target = \"nixos\"",
            "target = \"nixos\"\ngpu = { vendor = \"nvidia\", model = \"l4\", count = 1, driver-capabilities = [] }",
        )
        .replace(
            "kind = \"picoclaw\"\nhost = \"box\"",
            "kind = \"picoclaw\"\nhost = \"box\"\ncpus = 0.004\nmemory = \"1m\"\npublish = [8080]",
        )
        .replace("members = [\"bot\", \"@ana\"]", "members = [\"bot\", \"@ana\", \"@\"]");
    let err = check_refuses(&spec);
    for expected in [
        "`driver-capabilities` is empty, so no GPU work could run",
        "`cpus = 0.004` is out of range",
        "`memory = \"1m\"` is below Docker's minimum of 6m",
        "agent `bot` has no gateway to publish: only OpenClaw serves one",
        "room `main` lists an empty member",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
}

#[test]
fn the_default_overlay_must_not_overlap_the_network() {
    let spec = VALID
        .replace("name = \"t\"", "name = \"t\"\nnetwork = \"10.89.0.0/16\"")
        .replace("[matrix]", "[hosts.pi]\ntarget = \"rpi4\"\n\n[matrix]")
        .replace(
            "kind = \"picoclaw\"\nhost = \"box\"",
            "kind = \"picoclaw\"\nhost = \"pi\"",
        );
    let err = check_refuses(&spec);
    assert_contains(
        &err,
        "overlay `10.89.0.0/24` overlaps the appliance network `10.89.0.0/16`",
    );
    assert_contains(&err, "the overlay defaults to `10.89.0.0/24`");
}

#[test]
fn flags_that_do_not_apply_point_at_themselves() {
    let spec = VALID.replace(
        "[rooms.main]",
        "[agents.writer]\nkind = \"hermes\"\nhost = \"box\"\nremote-exec = true\ncode-network = true\n\n[rooms.main]",
    );
    let err = check_refuses(&spec);
    assert_contains(
        &err,
        "appliance.toml:24:15: `remote-exec` applies to picoclaw agents only",
    );
    assert_contains(
        &err,
        "appliance.toml:25:16: `code-network` is set but the agent has no code execution",
    );
}

#[test]
fn port_clashes_are_per_protocol() {
    // Two hosts, so WireGuard takes UDP 51820; a TCP port 51820 is free.
    let spec = VALID
        .replace("[matrix]", "[hosts.pi]\ntarget = \"rpi4\"\n\n[matrix]")
        .replace(
            "server-name = \"t.internal\"",
            "server-name = \"t.internal\"\nport = 53",
        )
        .replace(
            "[rooms.main]",
            "[agents.ui]\nkind = \"openclaw\"\nhost = \"pi\"\npublish = [51820]\n\n[rooms.main]",
        );
    let err = check_refuses(&spec);
    assert_lacks(&err, "51820");
    assert_contains(
        &err,
        "tcp port 53 on host `box` is used by both the sandboxes' DNS resolver and the Matrix homeserver",
    );
}

/// Runs `check` on `spec` and asserts it is refused with `expected` (which
/// starts with the `file:line:column` of the bad value) and a hint.
fn assert_refused(spec: &str, expected: &[&str]) -> String {
    let (_dir, output) = run_spec(spec, &["check"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    for expected in expected {
        let line = err
            .lines()
            .position(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("missing `{expected}` in:\n{err}"));
        let next = err.lines().nth(line + 1).unwrap_or_default();
        assert!(next.starts_with("hint: "), "no hint after `{expected}` in:\n{err}");
    }
    err
}

#[test]
fn port_zero_for_matrix_and_inference_is_refused() {
    let spec = VALID
        .replace("server-name = \"t.internal\"", "server-name = \"t.internal\"\nport = 0")
        .replace("models = [\"qwen3:4b\"]", "models = [\"qwen3:4b\"]\nport = 0");
    assert_refused(
        &spec,
        &[
            "appliance.toml:11:8: `[matrix]` port 0",
            "appliance.toml:17:8: `[inference]` port 0",
        ],
    );
}

#[test]
fn a_server_name_too_long_for_matrix_user_ids_is_refused() {
    // 4 labels of 55 and 3 dots: 223 bytes, so `@` + a 32-byte name + `:`
    // makes a user id of 257 bytes, over Matrix's 255.
    let long = vec!["a".repeat(55); 4].join(".");
    let spec = VALID.replace("server-name = \"t.internal\"", &format!("server-name = \"{long}\""));
    let err = assert_refused(&spec, &["appliance.toml:10:15: server name `"]);
    assert_contains(&err, "255 bytes");
}

#[test]
fn context_zero_is_refused() {
    let spec = VALID.replace(
        "kind = \"picoclaw\"\nhost = \"box\"",
        "kind = \"picoclaw\"\nhost = \"box\"\ncontext = 0",
    );
    assert_refused(&spec, &["appliance.toml:20:11: agent `bot` has `context = 0`"]);
}

#[test]
fn egress_addresses_metadata_and_special_names_are_refused_where_written() {
    let entries = [
        "127.1",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "2130706433",
        "10.1.2",
        "[::1]",
        "::ffff:169.254.169.254",
        "metadata.goog",
        "metadata.google.internal",
        "printer.home.arpa",
        "*.home.arpa",
        "nas.local",
        "*.co.uk",
        "com",
        "*.github.io",
    ];
    let list: Vec<String> = entries.iter().map(|e| format!("  \"{e}\",")).collect();
    let spec = VALID.replace(
        "kind = \"picoclaw\"\nhost = \"box\"",
        &format!(
            "kind = \"picoclaw\"\nhost = \"box\"\negress = [\n  \"api.github.com\",\n{}\n]",
            list.join("\n")
        ),
    );
    // The list starts on line 20; `api.github.com` is line 21.
    let expected: Vec<String> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| format!("appliance.toml:{}:3: egress domain `{e}`", 22 + i))
        .collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    let err = assert_refused(&spec, &expected);
    assert!(
        !err.contains("egress domain `api.github.com`"),
        "a public name is fine:\n{err}"
    );
}

#[test]
fn the_same_wireguard_key_on_two_hosts_is_refused_at_the_second() {
    let key = "mNbYbWZ3kS7kqMFCPUk5GWPuCC4ZjnCTjpFm/9eMJ1E=";
    let spec = VALID
        .replace(
            "target = \"nixos\"",
            &format!("target = \"nixos\"\nwireguard-public-key = \"{key}\""),
        )
        .replace(
            "[matrix]",
            &format!("[hosts.pi]\ntarget = \"rpi4\"\nwireguard-public-key = \"{key}\"\n\n[matrix]"),
        );
    assert_refused(
        &spec,
        &["appliance.toml:11:24: host `pi` has the WireGuard public key of host `box`"],
    );
}

#[test]
fn gpu_models_endpoints_keys_and_free_text_are_checked_for_what_they_are() {
    let spec = VALID
        .replace(
            "target = \"nixos\"",
            "target = \"nixos\"\n\
             gpu = { vendor = \"nvidia\", model = \"l4\\n}; evil = 1; #\", count = 1 }\n\
             endpoint = \"x\\\";id;\\\":51820\"\n\
             ssh-keys = [\"ssh-ed25519 AAAA ana\\u001b[2J\"]",
        )
        .replace("members = [", "topic = \"one\\ntwo\"\nmembers = [");
    let err = assert_refused(
        &spec,
        &[
            "appliance.toml:7:36: GPU model \"l4\\n}; evil = 1; #\" is not a GPU model",
            "appliance.toml:8:12: `endpoint = \"x\\\";id;\\\":51820\"` has host",
            "appliance.toml:9:13: this is not an SSH public key: it has a comment that contains the control character U+001B",
            "appliance.toml:25:9: the topic of room `main` contains the control character U+000A",
        ],
    );
    assert!(
        !err.contains('\u{1b}'),
        "control characters are shown, not sent:\n{err:?}"
    );
}

/// `[matrix] database` takes PostgreSQL or SQLite; anything else is
/// refused where it stands, with the values it takes.
#[test]
fn an_unknown_synapse_database_is_refused() {
    let spec = VALID.replace(
        "server-name = \"t.internal\"",
        "server-name = \"t.internal\"\ndatabase = \"mysql\"",
    );
    let (dir, output) = run_spec(&spec, &["generate"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_contains(
        &err,
        "error: appliance.toml:11:12: unknown variant `mysql`, expected `postgresql` or `sqlite`",
    );
    assert_contains(&err, "hint: ");
    assert!(!dir.path().join("generated").exists(), "a bad spec must write nothing");

    let sqlite = VALID.replace(
        "server-name = \"t.internal\"",
        "server-name = \"t.internal\"\ndatabase = \"sqlite\"",
    );
    let (dir, output) = run_spec(&sqlite, &["generate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let settings = fs::read_to_string(dir.path().join("generated/hosts/box/synapse.json")).unwrap();
    assert_contains(&settings, "\"name\": \"sqlite3\"");
    let options = host_options(dir.path());
    // No `appliance.synapse.postgresql` (modules/synapse.nix): no database server.
    assert_eq!(options["synapse"]["enable"], true);
    assert!(options["synapse"].get("postgresql").is_none(), "{}", options["synapse"]);
}

/// The `appliance` option values generated for host `box` in `dir`
/// (generated/hosts/box/options.json).
fn host_options(dir: &std::path::Path) -> serde_json::Value {
    let text = fs::read_to_string(dir.join("generated/hosts/box/options.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["appliance"].clone()
}

/// `[matrix] loop-budget` reaches the warden's plan; 0 (mute at the first
/// agent message) is refused where it is written.
#[test]
fn loop_budget_reaches_the_plan_and_zero_is_refused() {
    let spec = VALID.replace("admins = [\"ana\"]", "admins = [\"ana\"]\nloop-budget = 3");
    let (dir, output) = run_spec(&spec, &["generate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("generated/bootstrap/plan.json")).unwrap()).unwrap();
    assert_eq!(plan["loop_budget"], 3);

    let spec = VALID.replace("admins = [\"ana\"]", "admins = [\"ana\"]\nloop-budget = 0");
    let (dir, output) = run_spec(&spec, &["generate"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_contains(
        &err,
        "error: appliance.toml:12:15: `loop-budget` is 0, which would have the warden mute the agents at their first message",
    );
    assert_contains(&err, "hint: set it to 1 or more (the default is 8), or remove it");
    assert!(!dir.path().join("generated").exists(), "a bad spec must write nothing");
}

/// `[matrix] grant-default`/`grant-max` and `[agents.<name>] grants`
/// reach the warden's plan; a bad duration, a maximum past 30 days and a
/// default past the maximum are refused where they are written.
#[test]
fn egress_grants_reach_the_plan_and_bad_durations_are_refused() {
    let spec = VALID
        .replace(
            "admins = [\"ana\"]",
            "admins = [\"ana\"]\ngrant-default = \"30m\"\ngrant-max = \"2h\"",
        )
        .replace(
            "host = \"box\"\n\n[rooms",
            "host = \"box\"\negress = [\"api.github.com\"]\n\n[rooms",
        );
    let (dir, output) = run_spec(&spec, &["generate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let read = |dir: &tempfile::TempDir| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(dir.path().join("generated/bootstrap/plan.json")).unwrap()).unwrap()
    };
    let plan = read(&dir);
    assert_eq!(
        plan["grants"],
        serde_json::json!({"default_secs": 1800, "max_secs": 7200})
    );
    assert_eq!(
        plan["accounts"][0]["egress_grants"]["file"]["path"],
        "/var/lib/appliance/egress-grants/bot"
    );
    let proxy = fs::read_to_string(dir.path().join("generated/hosts/box/egress-proxy.conf")).unwrap();
    assert_contains(
        &proxy,
        "acl grants_bot dstdomain -n \"/var/lib/appliance/egress-grants/bot\"\n",
    );

    let off = spec.replace(
        "egress = [\"api.github.com\"]",
        "egress = [\"api.github.com\"]\ngrants = false",
    );
    let (dir, output) = run_spec(&off, &["generate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let refused = read(&dir)["accounts"][0]["egress_grants"]["refused"]
        .as_str()
        .unwrap()
        .to_string();
    assert_contains(&refused, "grants = false");
    let proxy = fs::read_to_string(dir.path().join("generated/hosts/box/egress-proxy.conf")).unwrap();
    assert_lacks(&proxy, "grants_bot");

    for (bad, column, message) in [
        ("grant-default = \"1w\"", 17, "`grant-default`: `1w` is not a duration"),
        (
            "grant-max = \"31d\"",
            13,
            "`grant-max` is 31d, longer than the 30d a grant may last",
        ),
        (
            "grant-default = \"3h\"",
            17,
            "`grant-default` (3h) is longer than `grant-max` (2h)",
        ),
    ] {
        let text = VALID.replace(
            "admins = [\"ana\"]",
            &format!("admins = [\"ana\"]\ngrant-max = \"2h\"\n{bad}"),
        );
        let text = if bad.starts_with("grant-max") {
            VALID.replace("admins = [\"ana\"]", &format!("admins = [\"ana\"]\n{bad}"))
        } else {
            text
        };
        let (dir, output) = run_spec(&text, &["generate"]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let err = stderr(&output);
        let line = text.lines().position(|l| l == bad).unwrap() + 1;
        assert!(
            err.contains(&format!("error: appliance.toml:{line}:{column}: {message}")),
            "{bad}: {err}"
        );
        assert!(!dir.path().join("generated").exists(), "a bad spec must write nothing");
    }
}

/// `approve` (docs/spec.md): code execution waits for an admin by default,
/// through the warden's broker socket; `approve = []` turns it off and the
/// agent mounts its code sandbox's own socket; an action the agent does not
/// have, or one the spec does not know, is an error.
#[test]
fn code_execution_waits_for_approval_unless_the_spec_says_otherwise() {
    let coder = "[agents.coder]\nkind = \"hermes\"\nhost = \"box\"\ntools = [\"code\"]\ncode-execution = \"docker-in-gvisor\"\n";
    let spec = VALID.replace("[rooms.main]", &format!("{coder}\n[rooms.main]"));
    let plan_and_host = |spec: &str| {
        let (dir, output) = run_spec(spec, &["generate"]);
        assert!(output.status.success(), "{}", stderr(&output));
        let plan: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("generated/bootstrap/plan.json")).unwrap())
                .unwrap();
        let host = host_options(dir.path());
        let coder = plan["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["localpart"] == "coder")
            .unwrap()
            .clone();
        (coder, host)
    };
    let (coder, host) = plan_and_host(&spec);
    assert_eq!(
        coder["code_approval"],
        serde_json::json!({
            "sandbox": "coder-exec",
            "socket": "/run/appliance/approval/coder-exec/docker.sock",
            "upstream": "/run/appliance/sockets/coder-exec/docker.sock",
        })
    );
    let volumes = |host: &serde_json::Value| host["sandboxes"]["coder"]["volumes"].clone();
    assert!(
        volumes(&host).as_array().unwrap().contains(&serde_json::json!(
            "/run/appliance/approval/coder-exec:/run/appliance-docker:ro"
        )),
        "{}",
        volumes(&host)
    );
    // The code sandbox's own socket directory is root's alone: only the
    // warden's broker (root) reaches it.
    assert_eq!(
        host["directories"]["/run/appliance/sockets/coder-exec"],
        serde_json::json!({ "mode": "0700" })
    );

    let explicit = spec.replace(
        "code-execution = \"docker-in-gvisor\"\n",
        "code-execution = \"docker-in-gvisor\"\napprove = [\"code-execution\"]\n",
    );
    assert_eq!(plan_and_host(&explicit).0["code_approval"], coder["code_approval"]);

    let off = spec.replace(
        "code-execution = \"docker-in-gvisor\"\n",
        "code-execution = \"docker-in-gvisor\"\napprove = []\n",
    );
    let (coder, host) = plan_and_host(&off);
    assert!(coder.get("code_approval").is_none(), "{coder}");
    assert!(
        volumes(&host).as_array().unwrap().contains(&serde_json::json!(
            "/run/appliance/sockets/coder-exec:/run/appliance-docker:ro"
        )),
        "{}",
        volumes(&host)
    );
    assert_lacks(host.to_string(), "/run/appliance/approval");

    for (bad, message) in [
        (
            VALID.replace(
                "host = \"box\"\n\n[rooms",
                "host = \"box\"\napprove = [\"code-execution\"]\n\n[rooms",
            ),
            "agent `bot` has no code execution, so `approve = [\"code-execution\"]` has nothing to approve",
        ),
        (
            spec.replace(
                "code-execution = \"docker-in-gvisor\"\n",
                "code-execution = \"docker-in-gvisor\"\napprove = [\"network\"]\n",
            ),
            "unknown variant `network`",
        ),
        (
            spec.replace(
                "code-execution = \"docker-in-gvisor\"\n",
                "code-execution = \"docker-in-gvisor\"\napprove = [\"code-execution\", \"code-execution\"]\n",
            ),
            "`code-execution` is listed twice in `approve`",
        ),
    ] {
        let (dir, output) = run_spec(&bad, &["generate"]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let err = stderr(&output);
        assert_contains(&err, message);
        assert!(!dir.path().join("generated").exists(), "a bad spec must write nothing");
    }
}

/// `[backup]` (docs/backup.md): the Matrix host gets `backup.json` and the
/// module setting `appliance.backup`; every value is refused where written
/// unless it is what it claims to be.
#[test]
fn backup_reaches_the_matrix_host_and_bad_values_are_refused_where_written() {
    let with = |table: &str| format!("{VALID}\n[backup]\n{table}");
    let good =
        with("repository = \"sftp:backup@nas.t.internal:/srv/restic/t\"\npassword-file = \"/root/backup-password\"\n");
    let (dir, output) = run_spec(&good, &["generate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("generated/hosts/box/backup.json")).unwrap()).unwrap();
    assert_eq!(config["repository"], "sftp:backup@nas.t.internal:/srv/restic/t");
    assert_eq!(config["password_file"], "/root/backup-password");
    assert_eq!(
        config["volumes"],
        serde_json::json!([{ "name": "appliance-bot-state", "agent": "bot" }])
    );
    assert_eq!(config["postgresql"]["database"], "matrix-synapse");
    let backup = &host_options(dir.path())["backup"];
    assert_eq!(backup["schedule"], "daily");
    assert_eq!(backup["keepDaily"], 7);
    assert_eq!(
        backup["configFile"],
        serde_json::json!({ "generatedFile": "hosts/box/backup.json" })
    );
    // Without `[backup]`: nothing, and `explain` says so.
    let (dir, output) = run_spec(VALID, &["generate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!dir.path().join("generated/hosts/box/backup.json").exists());
    let explain = run_in(dir.path(), &["explain"]);
    assert!(
        String::from_utf8_lossy(&explain.stdout).contains("backup: off on host box"),
        "{}",
        String::from_utf8_lossy(&explain.stdout)
    );

    let line = VALID.lines().count() + 3;
    let password = "password-file = \"/root/p\"\n";
    for (table, at, message) in [
        (
            "repository = \"backups\"\npassword-file = \"/root/p\"\n",
            (line, 14),
            "backup repository `backups` is not a local absolute path",
        ),
        (
            "repository = \"sftp:u@-oProxyCommand=sh:/x\"\npassword-file = \"/root/p\"\n",
            (line, 14),
            "backup repository `sftp:u@-oProxyCommand=sh:/x` has the host `-oProxyCommand=sh`",
        ),
        (
            "repository = \"s3:http://minio.t/b1b\"\npassword-file = \"/root/p\"\n",
            (line, 14),
            "backup repository `s3:http://minio.t/b1b` is not `s3:https://host/bucket/path` (only HTTPS endpoints",
        ),
        (
            "repository = \"/var/lib/appliance/b\"\npassword-file = \"/root/p\"\n",
            (line, 14),
            "backup repository `/var/lib/appliance/b` is inside the appliance's state directory",
        ),
        (
            "repository = \"/mnt/b\"\npassword-file = \"/nix/store/x-pw\"\n",
            (line + 1, 17),
            "backup `password-file` `/nix/store/x-pw` is in the Nix store",
        ),
        (
            "repository = \"/mnt/b\"\npassword-file = \"/root/p\"\nenvironment-file = \"creds\"\n",
            (line + 2, 20),
            "backup `environment-file` `creds` is not an absolute path",
        ),
        (
            "repository = \"/mnt/b\"\npassword-file = \"/root/p\"\nschedule = \"daily; reboot\"\n",
            (line + 2, 12),
            "backup schedule `daily; reboot`",
        ),
        (
            "repository = \"/mnt/b\"\npassword-file = \"/root/p\"\nkeep-weekly = 5000\n",
            (line + 2, 15),
            "`keep-weekly` is 5000",
        ),
    ] {
        let spec = with(table);
        let (row, column) = at;
        assert_refused(&spec, &[&format!("appliance.toml:{row}:{column}: {message}")]);
    }
    let none = with(&format!(
        "repository = \"/mnt/b\"\n{password}keep-daily = 0\nkeep-weekly = 0\nkeep-monthly = 0\n"
    ));
    assert_refused(&none, &["keeps no snapshot"]);
}

/// `credentials` (docs/spec.md): each entry points at its own value; a
/// token file that is not a plain absolute path outside the Nix store, an
/// agent whose `egress` reaches none of the service's hosts, and a service
/// the appliance does not know are errors, and nothing is written.
#[test]
fn credentials_are_checked_where_they_are_written() {
    let with = |lines: &str| VALID.replace("host = \"box\"\n\n[rooms", &format!("host = \"box\"\n{lines}\n[rooms"));
    let good =
        with("egress = [\"api.github.com\"]\ncredentials = { github = \"/var/lib/appliance/credentials/gh\" }\n");
    let (dir, output) = run_spec(&good, &["generate"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let host = host_options(dir.path());
    let bot = &host["sandboxes"]["bot"];
    assert_eq!(
        bot["environment"]["GH_TOKEN"], "appliance-placeholder-bot-github",
        "{bot}"
    );
    let credentials: Vec<&serde_json::Value> = host["egress"]["credentials"].as_object().unwrap().values().collect();
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    assert_eq!(credentials[0]["tokenFile"], "/var/lib/appliance/credentials/gh");
    assert!(
        bot["volumes"].as_array().unwrap().contains(&serde_json::json!(
            "/var/lib/appliance/egress-ca:/run/appliance/egress-ca:ro"
        )),
        "{bot}"
    );
    let conf = fs::read_to_string(dir.path().join("generated/hosts/box/egress-proxy.conf")).unwrap();
    assert!(
        conf.contains("acl credential_hosts_bot_github dstdomain -n api.github.com\n"),
        "{conf}"
    );

    for (bad, message) in [
        (
            with("egress = [\"api.github.com\"]\ncredentials = { github = \"gh-token\" }\n"),
            "appliance.toml:21:26: agent `bot`: the `github` token file `gh-token` is not an absolute path",
        ),
        (
            with("egress = [\"api.github.com\"]\ncredentials = { github = \"/run/keys/$(id)\" }\n"),
            "appliance.toml:21:26: agent `bot`: the `github` token file `/run/keys/$(id)` has a character other than",
        ),
        (
            with("egress = [\"api.github.com\"]\ncredentials = { github = \"/nix/store/x-token\" }\n"),
            "is in the Nix store, which every user of the host can read",
        ),
        (
            with("egress = [\"codeload.github.com\"]\ncredentials = { github = \"/run/keys/gh\" }\n"),
            "appliance.toml:21:26: agent `bot` has a `github` credential, but its `egress` reaches none of the hosts it is added on (api.github.com, uploads.github.com)",
        ),
        (
            with("credentials = { github = \"/run/keys/gh\" }\n"),
            "appliance.toml:20:26: agent `bot` has a `github` credential, but its `egress` reaches none",
        ),
        (
            with("egress = \"web\"\ncredentials = { gitlab = \"/run/keys/gl\" }\n"),
            "unknown variant `gitlab`, expected `github`",
        ),
        (
            with("egress = \"web\"\ncredentials = { github = \"/run/keys/gh\" }\n").replace(
                "[rooms.main]",
                "[agents.coder]\nkind = \"hermes\"\nhost = \"box\"\ntools = [\"code\"]\n\
                 code-execution = \"docker-in-gvisor\"\ncode-network = true\negress = \"web\"\n\n[rooms.main]",
            ),
            "appliance.toml:21:26: agent `bot`: the proxy adds its `github` credential to requests from its sandbox's address, but agent `coder` on the same host has `code-network = true`",
        ),
    ] {
        let (dir, output) = run_spec(&bad, &["generate"]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let err = stderr(&output);
        assert!(err.contains(message), "{message}\n{err}");
        assert!(!dir.path().join("generated").exists(), "a bad spec must write nothing");
    }
}
