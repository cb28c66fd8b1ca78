//! The agents' own configs: snapshots for the default spec, and acceptance
//! of every config of the default spec and the examples by the agents
//! themselves: OpenClaw 2026.9.6 (+ its Matrix plugin) and Hermes 0.19.0 as
//! installed by `.ci/agents.sh`, PicoClaw v0.2.9 as `.ci/gobuild.sh` builds
//! it (its schema, written down in `agents/picoclaw_schema.rs`, stays as the
//! fast check). Each real check also has a negative twin, so a validator
//! that accepts anything fails the suite.

mod picoclaw_schema;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use agent_appliance::generator::model::{Agent, Appliance};
use agent_appliance::generator::render::{self, Tree};
use agent_appliance::generator::spec::schema::AgentKind;
use serde_json::{Value, json};

use crate::support::{require_install, root};

/// The default spec and every example.
fn specs() -> Vec<PathBuf> {
    let mut specs = vec![root().join("appliance.toml")];
    let mut examples: Vec<PathBuf> = fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path().join("appliance.toml"))
        .filter(|p| p.exists())
        .collect();
    examples.sort();
    specs.extend(examples);
    specs
}

fn load(spec: &Path) -> (Appliance, Tree) {
    let appliance = agent_appliance::operator::commands::load(spec).unwrap();
    let tree = render::render(&appliance).unwrap();
    (appliance, tree)
}

/// The kind's native config file, as the registry names it.
fn config_file(kind: AgentKind) -> &'static str {
    agent_appliance::generator::kinds::of(kind).sandbox().config_file
}

/// Every agent of `kind` in every spec, with its rendered config.
fn configs(kind: AgentKind) -> Vec<(String, Agent, Appliance, String)> {
    let mut found = Vec::new();
    for spec in specs() {
        let (appliance, tree) = load(&spec);
        for agent in appliance.agents.values().filter(|a| a.kind == kind) {
            let path = format!("agents/{}/{}", agent.name, config_file(kind));
            let text = String::from_utf8(tree[&path].clone()).unwrap();
            let label = format!("{} in {}", agent.name, spec.strip_prefix(root()).unwrap().display());
            found.push((label, agent.clone(), appliance.clone(), text));
        }
    }
    assert!(!found.is_empty(), "no {kind:?} agent in any spec");
    found
}

/// A rendered config as data: YAML (Hermes') or JSON, by its file name.
fn config_value(kind: AgentKind, text: &str) -> Value {
    if config_file(kind).ends_with(".yaml") {
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("bad YAML ({e}):\n{text}"))
    } else {
        serde_json::from_str(text).unwrap()
    }
}

fn output_text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `checker` refused a config, and its stdout names `what` it refused.
#[track_caller]
fn assert_rejected_naming(checker: &str, output: &Output, what: &str) {
    assert!(
        !output.status.success(),
        "{checker} accepts `{what}`:\n{}",
        output_text(output)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(what),
        "the rejection does not name `{what}`:\n{}",
        output_text(output)
    );
}

/// The JSON object in a tool's stdout (some print a log line first).
fn stdout_json(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in output:\n{}", output_text(output)));
    serde_json::from_str(&text[start..]).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", output_text(output)))
}

// ---------------------------------------------------------------- snapshots

#[test]
fn snapshots_of_the_default_spec() {
    let (appliance, tree) = load(&root().join("appliance.toml"));
    for agent in appliance.agents.values() {
        let path = format!("agents/{}/{}", agent.name, config_file(agent.kind));
        let text = String::from_utf8(tree[&path].clone()).unwrap();
        insta::assert_snapshot!(format!("{}-{}", agent.name, config_file(agent.kind)), text);
    }
}

#[test]
fn no_config_holds_a_secret_or_a_wildcard() {
    for kind in agent_appliance::generator::kinds::ALL.iter().map(|k| k.id()) {
        for (label, agent, _, text) in configs(kind) {
            // Values as JSON spells them (quoted strings), whatever the format.
            let text = serde_json::to_string_pretty(&config_value(kind, &text)).unwrap();
            for bad in [
                "\"*\"",
                "password",
                "syt_",
                "dangerouslyDisableDeviceAuth",
                "\"open\"",
                "\"always\"",
            ] {
                assert!(!text.contains(bad), "{label}: config contains `{bad}`:\n{text}");
            }
            let dangerous = text.matches("dangerously").count();
            // OpenClaw: the Matrix account's, and with a proxied browser its
            // SSRF check, which the egress proxy does outside the sandbox.
            let proxied_browser = agent.egress_proxy.is_some()
                && agent
                    .tools
                    .contains(&agent_appliance::generator::spec::schema::Tool::Browser);
            let allowed = usize::from(kind == AgentKind::Openclaw) * (1 + usize::from(proxied_browser));
            assert_eq!(dangerous, allowed, "{label}: unexpected `dangerously*` option:\n{text}");
            if kind == AgentKind::Openclaw {
                // The allowed ones, at exactly their places.
                let config: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    config["channels"]["matrix"]["network"]["dangerouslyAllowPrivateNetwork"],
                    json!(true),
                    "{label}"
                );
                if proxied_browser {
                    assert_eq!(
                        config["browser"]["ssrfPolicy"]["dangerouslyAllowPrivateNetwork"],
                        json!(true),
                        "{label}"
                    );
                    let args = config["browser"]["extraArgs"].as_array().unwrap();
                    assert_eq!(
                        args[0],
                        json!(format!("--proxy-server={}", agent.egress_proxy.as_deref().unwrap())),
                        "{label}"
                    );
                    // The rest only turn Chromium's own calls home off.
                    for arg in &args[1..] {
                        let arg = arg.as_str().unwrap();
                        assert!(
                            arg.starts_with("--disable-") || arg == "--no-pings",
                            "{label}: Chromium flag {arg} does more than turn something off"
                        );
                    }
                }
            }
        }
    }
}

// ----------------------------------------------------------------- OpenClaw

struct OpenClaw {
    prefix: PathBuf,
}

fn openclaw() -> Option<OpenClaw> {
    require_install(
        "APPLIANCE_OPENCLAW_PREFIX",
        ".ci/openclaw",
        "node_modules/openclaw/package.json",
        "OpenClaw 2026.9.6 and @openclaw/matrix from npm validate our openclaw.json",
    )
    .map(|prefix| OpenClaw { prefix })
}

impl OpenClaw {
    /// Runs `openclaw ARGS` on `config` (a temporary copy adjusted for this
    /// machine) with a fresh state dir and no network use.
    fn run(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let bin = self.prefix.join("node_modules/.bin");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        let mut command = Command::new(bin.join("openclaw"));
        command
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir)
            .env("OPENCLAW_STATE_DIR", dir.join("state"))
            .env("OPENCLAW_CONFIG_PATH", dir.join("openclaw.json"))
            .env("OPENCLAW_NO_AUTO_UPDATE", "1")
            .current_dir(dir);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().expect("failed to start openclaw")
    }

    /// Writes `config` for validation: the Matrix plugin is loaded from the
    /// install (in the image it is baked in), and the SecretRef file
    /// provider points at a fake token in `dir` instead of the sandbox's
    /// `/run/secrets/appliance`. Nothing else changes.
    fn stage(&self, dir: &Path, config: &str) {
        let mut config: Value = serde_json::from_str(config).unwrap();
        let plugin = self.prefix.join("node_modules/@openclaw/matrix");
        config["plugins"]["load"] = json!({ "paths": [plugin] });
        let providers = config["secrets"]["providers"].as_object_mut().unwrap();
        for (name, provider) in providers.iter_mut() {
            let fake = dir.join(format!("secret-{name}"));
            // Fake, never a real token; 0400 as the bootstrap writes them.
            fs::write(&fake, "fake-token-for-validation\n").unwrap();
            fs::set_permissions(&fake, fs::Permissions::from_mode(0o400)).unwrap();
            provider["path"] = json!(fake);
        }
        fs::create_dir_all(dir.join("state")).unwrap();
        fs::write(
            dir.join("openclaw.json"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    fn validate(&self, dir: &Path) -> Output {
        self.run(dir, &["config", "validate", "--json"], &[])
    }

    /// Stages `text` in `dir` and has OpenClaw validate it: valid, with
    /// no warning.
    #[track_caller]
    fn assert_valid(&self, label: &str, dir: &Path, text: &str) {
        self.stage(dir, text);
        let output = self.validate(dir);
        assert!(
            output.status.success(),
            "{label}: openclaw rejects the config\n{}",
            output_text(&output)
        );
        let report = stdout_json(&output);
        assert_eq!(report["valid"], json!(true), "{label}: {report}");
        assert_eq!(report["warnings"], json!([]), "{label}: {report}");
    }
}

#[test]
fn openclaw_accepts_every_generated_config() {
    let Some(openclaw) = openclaw() else { return };
    for (label, _, _, text) in configs(AgentKind::Openclaw) {
        let dir = tempfile::tempdir().unwrap();
        openclaw.assert_valid(&label, dir.path(), &text);

        // Every SecretRef resolves (the gateway token from the env file the
        // bootstrap writes, here a fake), and no secret is inline.
        let output = openclaw.run(
            dir.path(),
            &["secrets", "audit", "--check", "--json"],
            &[("OPENCLAW_GATEWAY_TOKEN", "fake-gateway-token")],
        );
        assert!(
            output.status.success(),
            "{label}: secrets audit fails\n{}",
            output_text(&output)
        );
        let audit = stdout_json(&output);
        assert_eq!(audit["status"], json!("clean"), "{label}: {audit}");
        assert_eq!(audit["summary"]["plaintextCount"], json!(0), "{label}: {audit}");
        assert_eq!(audit["resolution"]["refsChecked"], json!(2), "{label}: {audit}");
    }
}

#[test]
fn openclaw_rejects_unknown_keys_in_core_and_matrix_plugin() {
    let Some(openclaw) = openclaw() else { return };
    let (_, _, _, text) = configs(AgentKind::Openclaw).remove(0);
    for (pointer, key) in [("", "gatewya"), ("/channels/matrix", "autoJoinAllowList")] {
        let mut config: Value = serde_json::from_str(&text).unwrap();
        config.pointer_mut(pointer).unwrap()[key] = json!(true);
        let dir = tempfile::tempdir().unwrap();
        openclaw.stage(dir.path(), &config.to_string());
        assert_rejected_naming("openclaw", &openclaw.validate(dir.path()), key);
    }
}

#[test]
fn openclaw_secrets_audit_catches_a_missing_secret() {
    let Some(openclaw) = openclaw() else { return };
    let (_, _, _, text) = configs(AgentKind::Openclaw).remove(0);
    let dir = tempfile::tempdir().unwrap();
    openclaw.stage(dir.path(), &text);
    // No OPENCLAW_GATEWAY_TOKEN in the environment.
    let output = openclaw.run(dir.path(), &["secrets", "audit", "--check", "--json"], &[]);
    let audit = stdout_json(&output);
    assert_ne!(audit["status"], json!("clean"), "{}", output_text(&output));
}

/// The shipped spec with melchior (OpenClaw) given the `exec` tool: its
/// config as generated, and the model's melchior.
fn openclaw_with_exec(admins: &str) -> (Agent, String) {
    let spec = fs::read_to_string(root().join("appliance.toml")).unwrap();
    let mut spec = spec.replacen("\nadmins = [\"gendo\"]\n", &format!("\nadmins = {admins}\n"), 1);
    if admins == "[]" {
        // The room's human member is the admin: gone with them.
        spec = spec.replacen(", \"@gendo\"]", "]", 1);
    }
    // melchior's is the only agent with exactly this line.
    let line = "\ntools = [\"web-fetch\"]\n";
    assert_eq!(spec.matches(line).count(), 1, "the shipped spec changed");
    assert!(spec.find(line) > spec.find("[agents.melchior]"));
    let spec = spec.replacen(line, "\ntools = [\"web-fetch\", \"exec\"]\n", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appliance.toml");
    fs::write(&path, spec).unwrap();
    let (appliance, tree) = load(&path);
    let agent = appliance.agents["melchior"].clone();
    assert!(
        agent
            .tools
            .contains(&agent_appliance::generator::spec::schema::Tool::Exec),
        "{:?}",
        agent.tools
    );
    let text = String::from_utf8(tree["agents/melchior/openclaw.json"].clone()).unwrap();
    (agent, text)
}

/// OpenClaw's own Matrix exec approvals (docs/agents.md, "Approvals, and
/// what each guards"): written only where exec is not denied outright,
/// with the spec's admins as the only approvers (never the other humans
/// of `dm.allowFrom`), prompts in their DMs; OpenClaw accepts it.
#[test]
fn openclaw_exec_approvals_go_to_the_spec_admins_only() {
    for (label, agent, _, text) in configs(AgentKind::Openclaw) {
        let config: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(config["tools"]["exec"]["security"], json!("deny"), "{label}");
        assert!(config["channels"]["matrix"].get("execApprovals").is_none(), "{label}");
        assert!(!agent.admins.is_empty(), "{label}");
    }
    let (agent, text) = openclaw_with_exec("[\"gendo\"]");
    let config: Value = serde_json::from_str(&text).unwrap();
    assert!(config["tools"].get("exec").is_none(), "{config}");
    assert_eq!(
        config["channels"]["matrix"]["execApprovals"],
        json!({ "enabled": true, "approvers": ["@gendo:magi"], "target": "dm" })
    );
    assert_eq!(json!(agent.admins), json!(["@gendo:magi"]));
    // With no admins, OpenClaw would read the empty list as unset and ask
    // every human of the agent's rooms (`dm.allowFrom`): off instead.
    let (lone, lone_text) = openclaw_with_exec("[]");
    assert!(lone.admins.is_empty());
    let lone_config: Value = serde_json::from_str(&lone_text).unwrap();
    assert_eq!(
        lone_config["channels"]["matrix"]["execApprovals"],
        json!({ "enabled": false, "approvers": [], "target": "dm" })
    );
    let Some(openclaw) = openclaw() else { return };
    let dir = tempfile::tempdir().unwrap();
    openclaw.assert_valid("melchior with exec", dir.path(), &text);
    let dir = tempfile::tempdir().unwrap();
    openclaw.assert_valid("melchior with exec and no admins", dir.path(), &lone_text);
}

#[test]
fn openclaw_uses_native_ollama_and_is_locked_down() {
    for (label, agent, _, text) in configs(AgentKind::Openclaw) {
        let config: Value = serde_json::from_str(&text).unwrap();
        let provider = &config["models"]["providers"]["ollama"];
        assert_eq!(provider["api"], json!("ollama"), "{label}");
        assert!(!provider["baseUrl"].as_str().unwrap().ends_with("/v1"), "{label}");
        assert_eq!(provider["models"][0]["contextWindow"], json!(agent.context), "{label}");
        assert_eq!(config["gateway"]["auth"]["mode"], json!("token"), "{label}");
        assert_eq!(config["agents"]["defaults"]["sandbox"]["mode"], json!("off"), "{label}");
        let matrix = &config["channels"]["matrix"];
        assert_eq!(matrix["dm"]["policy"], json!("allowlist"), "{label}");
        assert_eq!(matrix["groupPolicy"], json!("allowlist"), "{label}");
        assert_eq!(matrix["autoJoin"], json!("allowlist"), "{label}");
        assert_eq!(matrix["autoJoinAllowlist"], json!(agent.rooms), "{label}");
        assert_eq!(matrix["dm"]["allowFrom"], json!(agent.allowed_users), "{label}");
        assert_eq!(config["tools"]["web"]["search"]["enabled"], json!(false), "{label}");
        // Every loosened setting is listed, with a reason, and nothing else.
        let settings: Vec<&str> = agent.permissive.iter().map(|p| p.setting.as_str()).collect();
        let mut expected = vec!["channels.matrix.network.dangerouslyAllowPrivateNetwork = true"];
        if agent
            .tools
            .contains(&agent_appliance::generator::spec::schema::Tool::Browser)
        {
            expected.push("browser.noSandbox = true");
            assert_eq!(config["browser"]["noSandbox"], json!(true), "{label}");
            if agent.egress_proxy.is_some() {
                expected.push("browser.ssrfPolicy.dangerouslyAllowPrivateNetwork = true");
            }
        }
        expected.push("agents.defaults.sandbox.mode = \"off\"");
        let published: Vec<String> = agent_publish(&label);
        expected.extend(published.iter().map(String::as_str));
        let mut sorted_settings = settings.clone();
        sorted_settings.sort();
        expected.sort();
        assert_eq!(sorted_settings, expected, "{label}");
        assert!(agent.permissive.iter().all(|p| !p.reason.is_empty()), "{label}");
    }
}

/// The image keeps only the bundled plugins of `bundled_plugins`
/// (generated/images/openclaw.json; nix/packages/openclaw.nix and the
/// rehearsal's rootfs remove the others): every plugin a generated config
/// names or relies on must be among them, or OpenClaw would not find it.
#[test]
fn openclaw_configs_use_only_the_bundled_plugins_the_image_keeps() {
    for spec in specs() {
        let (appliance, tree) = load(&spec);
        let Some(image) = tree.get("images/openclaw.json") else {
            continue;
        };
        let image: Value = serde_json::from_slice(image).unwrap();
        let kept: Vec<&str> = image["bundled_plugins"]
            .as_array()
            .expect("the OpenClaw image lists the bundled plugins it keeps")
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        for agent in appliance.agents.values().filter(|a| a.kind == AgentKind::Openclaw) {
            let label = format!("{} in {}", agent.name, spec.strip_prefix(root()).unwrap().display());
            let path = format!("agents/{}/{}", agent.name, config_file(AgentKind::Openclaw));
            let config: Value = serde_json::from_slice(&tree[&path]).unwrap();
            let plugins = &config["plugins"];
            let mut named: Vec<String> = Vec::new();
            // The plugins it configures or allows.
            named.extend(plugins["entries"].as_object().unwrap().keys().cloned());
            for allowed in plugins["allow"].as_array().into_iter().flatten() {
                named.push(allowed.as_str().unwrap().to_string());
            }
            // Its channels and model providers are plugins of the same id.
            named.extend(config["channels"].as_object().unwrap().keys().cloned());
            for provider in config["models"]["providers"].as_object().into_iter().flatten() {
                named.push(provider.0.clone());
                named.push(provider.1["api"].as_str().unwrap().to_string());
            }
            // The browser tool is the `browser` plugin's.
            if config.get("browser").is_some() {
                named.push("browser".to_string());
            }
            // OpenClaw's memory: the memory slot's plugin, memory-core unless set.
            let memory = plugins["slots"]["memory"].as_str().unwrap_or("memory-core");
            if memory != "none" {
                named.push(memory.to_string());
            }
            assert!(named.contains(&"matrix".to_string()), "{label}: {named:?}");
            for plugin in &named {
                assert!(
                    kept.contains(&plugin.as_str()),
                    "{label}: its config uses the plugin `{plugin}`, which the image removes (bundled_plugins: {kept:?})"
                );
            }
        }
    }
}

// ------------------------------------------------------------------- Hermes

fn hermes_python() -> Option<PathBuf> {
    require_install(
        "APPLIANCE_HERMES_VENV",
        ".ci/hermes-venv",
        "bin/python",
        "hermes-agent 0.19.0 from PyPI validates our config.yaml",
    )
    .map(|venv| venv.join("bin/python"))
}

/// Runs tests/tools/validate_hermes.py on `config` with the environment the
/// sandbox gives the agent (from the model) plus a fake env file.
fn validate_hermes(python: &Path, appliance: &Appliance, agent: &Agent, config: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    fs::write(home.path().join("config.yaml"), config).unwrap();
    // What the bootstrap writes to the env file, with fake values.
    fs::write(
        home.path().join(".env"),
        "MATRIX_ACCESS_TOKEN=fake-token-for-validation\nMATRIX_ALLOWED_ROOMS=!fakeroomid:example\n",
    )
    .unwrap();
    let (_, sandbox) = appliance.sandbox(&agent.sandbox).unwrap();
    let mut command = Command::new(python);
    command
        .arg(root().join("tests/tools/validate_hermes.py"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home.path())
        .envs(&sandbox.environment)
        // After the sandbox's own HERMES_HOME, which is its volume.
        .env("HERMES_HOME", home.path())
        .current_dir(home.path());
    command.output().expect("failed to start the Hermes venv's python")
}

#[test]
fn hermes_accepts_every_generated_config() {
    let Some(python) = hermes_python() else { return };
    for (label, agent, appliance, text) in configs(AgentKind::Hermes) {
        let output = validate_hermes(&python, &appliance, &agent, &text);
        assert!(
            output.status.success(),
            "{label}: Hermes finds problems\n{}",
            output_text(&output)
        );
        let report = stdout_json(&output);
        assert!(
            !text.lines().nth(1).unwrap_or("").starts_with('{'),
            "{label}: config.yaml is JSON, not YAML:\n{text}"
        );
        assert_eq!(report["model"]["default"], json!(agent.model), "{label}: {report}");
        let base_url = format!("{}/v1", agent.inference_url.clone().unwrap());
        assert_eq!(report["runtime"]["provider"], json!("custom"), "{label}: {report}");
        assert_eq!(report["runtime"]["base_url"], json!(base_url), "{label}: {report}");
        assert_eq!(report["model"]["context_length"], json!(agent.context), "{label}");
        assert!(agent.context >= 64_000, "{label}");
        let tools: Vec<&str> = crate::support::json_strings(&report["matrix_tools"]);
        for public in ["text_to_speech", "image_generate", "x_search"] {
            assert!(
                !tools.contains(&public),
                "{label}: Hermes would offer `{public}`: {tools:?}"
            );
        }
        // web_search exactly when the crawler tool has the appliance's
        // SearXNG, web_extract when it also has its webextract.
        assert_eq!(
            tools.contains(&"web_search"),
            agent.search_url.is_some(),
            "{label}: {tools:?}"
        );
        assert_eq!(
            tools.contains(&"web_extract"),
            agent.search_url.is_some() && agent.extract_url.is_some(),
            "{label}: {tools:?}"
        );
        let code = agent.code_execution.is_some();
        assert_eq!(tools.contains(&"execute_code"), code, "{label}: {tools:?}");
        let terminal = &report["terminal"];
        assert_eq!(
            terminal["backend"],
            json!(if code { "docker" } else { "local" }),
            "{label}"
        );
        if code {
            assert_eq!(terminal["docker_network"], json!(agent.code_network), "{label}");
            assert_eq!(terminal["docker_forward_env"], json!([]), "{label}");
        }
        let matrix = &report["matrix"];
        assert_eq!(matrix["enabled"], json!(true), "{label}: {report}");
        assert_eq!(matrix["token_set"], json!(true), "{label}: {report}");
        assert_eq!(matrix["extra"]["homeserver"], json!(agent.homeserver_url), "{label}");
        assert_eq!(matrix["extra"]["e2ee_mode"], json!("off"), "{label}");
        assert_eq!(report["unauthorized_dm_behavior"], json!("ignore"), "{label}");
        assert_eq!(
            report["env"]["MATRIX_ALLOWED_USERS"],
            json!(agent.allowed_users.join(",")),
            "{label}"
        );
        assert_eq!(report["env"]["MATRIX_REQUIRE_MENTION"], json!("true"), "{label}");
    }
}

#[test]
fn hermes_reads_model_names_that_yaml_1_1_would_retype_as_strings() {
    // Valid Ollama references that PyYAML (YAML 1.1, Hermes' loader) reads
    // as a number, a bool and a date when they are not quoted.
    let Some(python) = hermes_python() else { return };
    let models = ["1:30", "on", "2001-12-14"];
    let mut spec = String::from(
        "[appliance]\nname = \"t\"\n[hosts.box]\ntarget = \"nixos\"\n\
         [matrix]\nhost = \"box\"\nserver-name = \"t.internal\"\n",
    );
    spec.push_str(&format!("[inference]\nhost = \"box\"\nmodels = {models:?}\n"));
    for (i, model) in models.iter().enumerate() {
        spec.push_str(&format!(
            "[agents.h{i}]\nkind = \"hermes\"\nhost = \"box\"\nmodel = \"{model}\"\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appliance.toml");
    fs::write(&path, spec).unwrap();
    let (appliance, tree) = load(&path);
    for agent in appliance.agents.values() {
        let text = String::from_utf8(tree[&format!("agents/{}/config.yaml", agent.name)].clone()).unwrap();
        let output = validate_hermes(&python, &appliance, agent, &text);
        assert!(output.status.success(), "{}: {}", agent.name, output_text(&output));
        let report = stdout_json(&output);
        assert_eq!(
            report["model"]["default"],
            json!(agent.model),
            "{}:\n{text}",
            agent.name
        );
    }
}

#[test]
fn hermes_check_rejects_unknown_keys_and_bad_values() {
    let Some(python) = hermes_python() else { return };
    let (_, agent, appliance, text) = configs(AgentKind::Hermes).remove(0);
    let config = config_value(AgentKind::Hermes, &text);
    let mut cases = Vec::new();
    let mut typo = config.clone();
    typo["terminal"]["backnd"] = json!("local");
    cases.push(("terminal.backnd", typo));
    let mut keyless = config.clone();
    // Hermes 0.21's key; 0.19.0 has no such switch.
    keyless["web"] = json!({ "keyless_fallback": false });
    cases.push(("web.keyless_fallback", keyless));
    let mut cloud = config.clone();
    cloud["browser"]["cloud_provider"] = json!("browserbase");
    cases.push(("browser.cloud_provider", cloud));
    let mut toolset = config;
    toolset["platform_toolsets"]["matrix"] = json!(["hermes-clii"]);
    cases.push(("platform_toolsets", toolset));
    for (what, config) in cases {
        let output = validate_hermes(&python, &appliance, &agent, &config.to_string());
        assert_rejected_naming("the Hermes check", &output, what);
    }
}

// ----------------------------------------------------------------- PicoClaw

#[test]
fn picoclaw_schema_accepts_every_generated_config() {
    for (label, agent, _, text) in configs(AgentKind::Picoclaw) {
        let config: Value = serde_json::from_str(&text).unwrap();
        let problems = picoclaw_schema::check(&config);
        assert!(problems.is_empty(), "{label}:\n{}", problems.join("\n"));
        // Strict settings PicoClaw would otherwise default loosely.
        assert_eq!(
            config["tools"]["exec"]["allow_remote"],
            json!(agent.remote_exec && config["tools"]["exec"]["enabled"] == json!(true)),
            "{label}"
        );
        assert_eq!(config["tools"]["web"]["enabled"], json!(false), "{label}");
        assert_eq!(config["tools"]["web"]["sogou"]["enabled"], json!(false), "{label}");
        assert_eq!(
            config["tools"]["skills"]["registries"]["github"]["enabled"],
            json!(false),
            "{label}"
        );
        assert_eq!(
            config["channel_list"]["matrix"]["settings"]["join_on_invite"],
            json!(false),
            "{label}"
        );
        // Canonical `matrix:<user id>`: PicoClaw reads a bare `@u:server`
        // as platform `@u` and answers no one (see
        // picoclaw_answers_exactly_the_allowed_users for the real check).
        let allow_from: Vec<String> = agent.allowed_users.iter().map(|u| format!("matrix:{u}")).collect();
        assert_eq!(
            config["channel_list"]["matrix"]["allow_from"],
            json!(allow_from),
            "{label}"
        );
        assert!(
            config["channel_list"]["matrix"]["settings"]
                .get("access_token")
                .is_none(),
            "{label}"
        );
        let api_base = config["model_list"][0]["api_base"].as_str().unwrap();
        assert!(api_base.ends_with("/v1"), "{label}: {api_base}");
        assert_eq!(
            config["agents"]["defaults"]["context_window"],
            json!(agent.context),
            "{label}"
        );
    }
}

/// `base` with the keys of `patch` set in the object at `pointer`.
fn patched(base: &Value, pointer: &str, patch: &Value) -> Value {
    let mut config = base.clone();
    let target = config.pointer_mut(pointer).unwrap().as_object_mut().unwrap();
    for (k, v) in patch.as_object().unwrap() {
        target.insert(k.clone(), v.clone());
    }
    config
}

#[test]
fn picoclaw_schema_rejects_what_picoclaw_rejects() {
    let (_, _, _, text) = configs(AgentKind::Picoclaw).remove(0);
    let base: Value = serde_json::from_str(&text).unwrap();
    // Each mutation and the problem the checker must report; the first
    // nine were rejected by PicoClaw v0.2.9's own loader on this machine.
    let cases: &[(&str, Value, &str)] = &[
        ("", json!({ "bogus": 1 }), "bogus: unknown field"),
        (
            "/agents/defaults",
            json!({ "restrict_to_workspce": true }),
            "restrict_to_workspce: unknown field",
        ),
        (
            "/model_list/0",
            json!({ "api_key": "x" }),
            "model_list[0].api_key: unknown field",
        ),
        (
            "/channel_list/matrix",
            json!({ "allowFrom": [] }),
            "allowFrom: unknown field",
        ),
        (
            "/channel_list/matrix",
            json!({ "homeserver": "http://x" }),
            "matrix.homeserver: unknown field",
        ),
        (
            "/tools/exec",
            json!({ "allow_remotee": false }),
            "allow_remotee: unknown field",
        ),
        ("/tools/exec", json!({ "allow_remote": "false" }), "expected bool"),
        ("/gateway", json!({ "hots": "0.0.0.0" }), "hots: unknown field"),
        ("", json!({ "version": 4 }), "unsupported config version"),
        // PicoClaw ignores this one silently; we do not.
        (
            "/channel_list/matrix/settings",
            json!({ "join_on_invitee": true }),
            "join_on_invitee: unknown field",
        ),
        (
            "/agents/defaults",
            json!({ "model_name": "nosuch" }),
            "not in model_list",
        ),
        ("", json!({ "hooks": {} }), "not written down"),
    ];
    for (pointer, patch, expected) in cases {
        let config = patched(&base, pointer, patch);
        let problems = picoclaw_schema::check(&config);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "mutation {pointer} {patch} not caught (want `{expected}`): {problems:?}"
        );
    }
}

#[test]
fn picoclaw_schema_text_parses() {
    let schema = picoclaw_schema::parse(picoclaw_schema::SCHEMA);
    assert!(schema.contains_key("channel_list") && schema.contains_key("tools"));
}

// ------------------------------------------------------- PicoClaw, the real one

/// PicoClaw v0.2.9 for this machine, as `.ci/gobuild.sh` builds it from its
/// Go module: `$APPLIANCE_PICOCLAW`, else `.ci/go/bin/picoclaw`. Missing, it
/// fails the test under CI=true and skips it loudly elsewhere (as
/// `require_install` does, with `.ci/gobuild.sh` as the fix).
fn picoclaw() -> Option<PathBuf> {
    let path = std::env::var_os("APPLIANCE_PICOCLAW").map_or_else(|| root().join(".ci/go/bin/picoclaw"), PathBuf::from);
    if path.is_file() {
        return Some(path);
    }
    let why = "PicoClaw v0.2.9, built from its Go module, loads our config.json";
    assert!(
        !crate::support::in_ci(),
        "`{}` is required in CI ({why}) but is not there\nhint: run `.ci/gobuild.sh`, or set `APPLIANCE_PICOCLAW`",
        path.display()
    );
    eprintln!(
        "\n!!! SKIPPED: `{}` is not there ({why}); run `.ci/gobuild.sh` or set `APPLIANCE_PICOCLAW`; CI=true makes this a failure !!!\n",
        path.display()
    );
    None
}

/// PicoClaw's verdict on a config file: `picoclaw status` loads the file
/// that PICOCLAW_CONFIG names with the loader `picoclaw gateway` uses
/// (`internal.LoadConfig`: unknown keys, types, channel settings, the model
/// list) and uses no network. It exits 0 either way, so the verdict is read
/// from its output.
struct PicoclawVerdict {
    accepted: bool,
    output: String,
}

/// Runs `command` (PicoClaw, possibly under an emulator) on `config`, with
/// a fresh home and the environment the sandbox gives it (a fake token).
fn picoclaw_status(mut command: Command, config: &str) -> PicoclawVerdict {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    fs::write(&path, config).unwrap();
    let output = command
        .args(["--no-color", "status"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.path())
        .env("PICOCLAW_HOME", dir.path())
        .env("PICOCLAW_CONFIG", &path)
        .env("PICOCLAW_CHANNELS_MATRIX_ACCESS_TOKEN", "fake-token-for-validation")
        .output()
        .expect("failed to start picoclaw");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let loaded = format!("Config: {} ✓", path.display());
    PicoclawVerdict {
        accepted: output.status.success() && stdout.contains(&loaded) && !stdout.contains("Error loading config"),
        output: output_text(&output),
    }
}

fn check_picoclaw_accepts(label: &str, command: Command, text: &str) {
    let verdict = picoclaw_status(command, text);
    assert!(
        verdict.accepted,
        "{label}: PicoClaw rejects the config\n{}",
        verdict.output
    );
    let config: Value = serde_json::from_str(text).unwrap();
    if let Some(model) = config["agents"]["defaults"]["model_name"].as_str() {
        assert!(
            verdict.output.contains(&format!("Model: {model}\n")),
            "{label}: PicoClaw does not read the model `{model}`\n{}",
            verdict.output
        );
    }
}

#[test]
fn picoclaw_accepts_every_generated_config() {
    let Some(picoclaw) = picoclaw() else { return };
    for (label, _, _, text) in configs(AgentKind::Picoclaw) {
        check_picoclaw_accepts(&label, Command::new(&picoclaw), &text);
    }
}

#[test]
fn picoclaw_rejects_broken_configs() {
    let Some(picoclaw) = picoclaw() else { return };
    let (_, _, _, text) = configs(AgentKind::Picoclaw).remove(0);
    let base: Value = serde_json::from_str(&text).unwrap();
    // Each mutation and what PicoClaw's refusal must name.
    let cases: &[(&str, Value, &str)] = &[
        ("", json!({ "bogus": 1 }), "bogus"),
        (
            "/agents/defaults",
            json!({ "restrict_to_workspce": true }),
            "restrict_to_workspce",
        ),
        ("/model_list/0", json!({ "api_key": "x" }), "api_key"),
        ("/channel_list/matrix", json!({ "allowFrom": [] }), "allowFrom"),
        ("/tools/exec", json!({ "allow_remotee": false }), "allow_remotee"),
        ("/tools/exec", json!({ "allow_remote": "false" }), "allow_remote"),
        ("/gateway", json!({ "hots": "0.0.0.0" }), "hots"),
        ("", json!({ "version": 4 }), "unsupported config version"),
        ("/channel_list/matrix", json!({ "type": "matrx" }), "matrx"),
    ];
    for (pointer, patch, expected) in cases {
        let config = patched(&base, pointer, patch);
        let verdict = picoclaw_status(Command::new(&picoclaw), &config.to_string());
        assert!(
            !verdict.accepted,
            "PicoClaw accepts {pointer} {patch}\n{}",
            verdict.output
        );
        assert!(
            verdict.output.contains(expected),
            "the refusal of {pointer} {patch} does not name `{expected}`\n{}",
            verdict.output
        );
    }
}

/// Builds tests/tools/picoclaw_allow (PicoClaw's own allow-list code) with
/// the module `.ci/gobuild.sh` downloaded; `None` (a loud skip, a failure
/// under CI=true) without Go or that module.
fn picoclaw_allow_tool(dir: &Path) -> Option<PathBuf> {
    // On PATH, else where .ci/gobuild.sh also looks.
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("go"))
            .find(|p| p.is_file())
    });
    let go = on_path.or_else(|| Some(PathBuf::from("/usr/local/go/bin/go")).filter(|p| p.is_file()));
    let module = go.as_ref().and_then(|go| {
        let output = Command::new(go)
            .args(["mod", "download", "-json", "github.com/sipeed/picoclaw@v0.2.9"])
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .output()
            .ok()?;
        let info: Value = serde_json::from_slice(&output.stdout).ok()?;
        info["Dir"].as_str().map(PathBuf::from)
    });
    let (Some(go), Some(module)) = (go, module) else {
        let why = "Go and the PicoClaw v0.2.9 module `.ci/gobuild.sh` downloads";
        assert!(
            !crate::support::in_ci(),
            "{why} are required in CI but missing\nhint: run `.ci/gobuild.sh`"
        );
        eprintln!("\n!!! SKIPPED: no {why}; run `.ci/gobuild.sh`; CI=true makes this a failure !!!\n");
        return None;
    };
    // PicoClaw's own go.mod and go.sum, so the build resolves exactly its
    // dependencies from the module cache and fetches nothing.
    let go_mod = fs::read_to_string(module.join("go.mod")).unwrap();
    let go_mod = go_mod.replacen("module github.com/sipeed/picoclaw", "module picoclaw_allow", 1);
    fs::write(
        dir.join("go.mod"),
        format!("{go_mod}\nrequire github.com/sipeed/picoclaw v0.2.9\n"),
    )
    .unwrap();
    fs::copy(module.join("go.sum"), dir.join("go.sum")).unwrap();
    fs::set_permissions(dir.join("go.sum"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::copy(root().join("tests/tools/picoclaw_allow/main.go"), dir.join("main.go")).unwrap();
    let output = Command::new(&go)
        .args(["build", "-o", "picoclaw_allow", "."])
        .current_dir(dir)
        .env("GOPROXY", "off")
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap();
    crate::support::assert_succeeded("building picoclaw_allow", &output);
    Some(dir.join("picoclaw_allow"))
}

/// Whether PicoClaw's Matrix channel takes a message from each of
/// `senders` under the config `text`.
fn picoclaw_allows(tool: &Path, text: &str, senders: &[&str]) -> Vec<bool> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    fs::write(&path, text).unwrap();
    let output = Command::new(tool).arg(&path).args(senders).output().unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let verdicts: Vec<bool> = stdout
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1 == "true")
        .collect();
    assert_eq!(verdicts.len(), senders.len(), "{stdout}");
    verdicts
}

/// PicoClaw reads an `allow_from` entry with a colon as `platform:id`, so a
/// bare Matrix ID (`@gendo:magi`, platform `@gendo`) matches no one and
/// the channel ignores everyone, admins included (sipeed/picoclaw#2815,
/// still so in v0.2.9). Every allowed user answers; nobody else does.
#[test]
fn picoclaw_answers_exactly_the_allowed_users() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tool) = picoclaw_allow_tool(dir.path()) else {
        return;
    };
    for (label, agent, appliance, text) in configs(AgentKind::Picoclaw) {
        let mut senders: Vec<&str> = agent.allowed_users.iter().map(String::as_str).collect();
        let allowed = senders.len();
        let others: Vec<&str> = appliance
            .agents
            .values()
            .filter(|o| o.name != agent.name)
            .map(|o| o.user_id.as_str())
            .collect();
        senders.extend(&others);
        senders.push("@stranger:example.org");
        let verdicts = picoclaw_allows(&tool, &text, &senders);
        for (sender, verdict) in senders.iter().zip(&verdicts) {
            let expected = senders[..allowed].contains(sender);
            assert_eq!(*verdict, expected, "{label}: PicoClaw answers {sender}: {verdict}");
        }
    }
}

/// `publish = N` permissive settings expected for the agent in `label`
/// (`<agent> in <spec>`), read from the spec the label names.
fn agent_publish(label: &str) -> Vec<String> {
    let (agent, spec) = label.split_once(" in ").expect("labels are `<agent> in <spec>`");
    let text = std::fs::read_to_string(crate::support::root().join(spec)).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    value["agents"][agent]
        .get("publish")
        .and_then(|p| p.as_array())
        .map(|ports| {
            ports
                .iter()
                .map(|p| format!("publish = {}", p.as_integer().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

/// The loop guard: no agent answers another agent. No agent's config (nor
/// the sandbox environment Hermes reads `MATRIX_ALLOWED_USERS` from) names
/// another agent, in every spec; each still answers the admins. Before the
/// guard, every agent listed every agent it shared a room with.
#[test]
fn no_agent_answers_another_agent() {
    for kind in agent_appliance::generator::kinds::ALL.iter().map(|k| k.id()) {
        for (label, agent, appliance, text) in configs(kind) {
            for admin in &appliance.matrix.admins {
                assert!(agent.allowed_users.contains(admin), "{label}: does not answer {admin}");
            }
            for other in appliance.agents.values().filter(|o| o.name != agent.name) {
                assert!(
                    !agent.allowed_users.contains(&other.user_id),
                    "{label} answers {}",
                    other.user_id
                );
                assert!(
                    !text.contains(&other.user_id),
                    "{label}: its config names {}",
                    other.user_id
                );
                let env: Vec<String> = appliance
                    .hosts
                    .values()
                    .flat_map(|h| &h.sandboxes)
                    .filter(|s| s.agent.as_deref() == Some(agent.name.as_str()))
                    .flat_map(|s| s.environment.values().cloned())
                    .collect();
                assert!(
                    env.iter().all(|v| !v.contains(&other.user_id)),
                    "{label}: its sandbox environment names {}",
                    other.user_id
                );
            }
        }
    }
}

/// The arm64 PicoClaw for the Pi: `APPLIANCE_PICOCLAW_ARM64`, else what
/// `.ci/gobuild.sh` links.
fn picoclaw_arm64() -> PathBuf {
    let path = std::env::var_os("APPLIANCE_PICOCLAW_ARM64")
        .map_or_else(|| root().join(".ci/go/bin/picoclaw-arm64"), PathBuf::from);
    let header = fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "no arm64 PicoClaw at `{}` ({e})\nhint: run `.ci/gobuild.sh`, or set `APPLIANCE_PICOCLAW_ARM64`",
            path.display()
        )
    });
    // ELF e_machine 183 (EM_AARCH64), little-endian, at byte 18.
    assert!(
        header.starts_with(b"\x7fELF") && header.get(18..20) == Some(&[183, 0][..]),
        "`{}` is not an arm64 ELF binary",
        path.display()
    );
    path
}

/// What the Pi runs: the arm64 build, under Debian's qemu-user-static,
/// loads each config generated for an aarch64 host (balthasar-pi, the
/// edge-pi example's agent), refuses a broken one, and as the gateway on
/// balthasar-pi's config logs in to a loopback Synapse and answers the admin.
#[test]
fn picoclaw_arm64_loads_the_pi_configs() {
    let binary = picoclaw_arm64();
    let Some(qemu) = crate::support::require_tool(
        "qemu-aarch64-static",
        "Debian package `qemu-user-static`: runs the Pi's arm64 PicoClaw",
    ) else {
        return;
    };
    let under_qemu = || {
        let mut command = Command::new(&qemu);
        command.arg(&binary);
        command
    };
    let pi_configs: Vec<_> = configs(AgentKind::Picoclaw)
        .into_iter()
        .filter(|(_, agent, appliance, _)| {
            appliance.hosts[&agent.host].system == agent_appliance::generator::spec::schema::System::Aarch64Linux
        })
        .collect();
    assert!(
        pi_configs
            .iter()
            .any(|(label, ..)| label == "balthasar-pi in appliance.toml"),
        "no PicoClaw agent on an aarch64 host: {:?}",
        pi_configs.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    for (label, _, _, text) in &pi_configs {
        check_picoclaw_accepts(label, under_qemu(), text);
    }
    // The negative twin: the same binary refuses an unknown key.
    let mut broken: Value = serde_json::from_str(&pi_configs[0].3).unwrap();
    broken["tools"]["exec"]["allow_remotee"] = json!(false);
    let verdict = picoclaw_status(under_qemu(), &broken.to_string());
    assert!(
        !verdict.accepted,
        "arm64 PicoClaw accepts `allow_remotee`\n{}",
        verdict.output
    );
    assert!(verdict.output.contains("allow_remotee"), "{}", verdict.output);

    // And the arm64 gateway on balthasar-pi's config logs in to a loopback
    // Synapse and answers the admin through the stand-in model.
    let Some(venv) = crate::support::synapse::venv() else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let matrix = TestMatrix::start(&venv, temp.path());
    let admin = matrix.user("gendo");
    let agent = matrix.user("balthasar-pi");
    let room = crate::support::synapse::create_room(&matrix.client, &admin, "public_chat");
    let join = matrix
        .client
        .post(&format!("/_matrix/client/v3/join/{room}"), Some(&agent), &json!({}))
        .unwrap();
    assert!(join.ok(), "{}", join.describe());
    let (model_port, requests) = stand_in_model("pong-from-the-stand-in");
    let (_, _, _, text) = pi_configs
        .iter()
        .find(|(label, ..)| label == "balthasar-pi in appliance.toml")
        .unwrap();
    let home = temp.path().join("picoclaw");
    fs::create_dir_all(&home).unwrap();
    let mut config: Value = serde_json::from_str(text).unwrap();
    config["channel_list"]["matrix"]["settings"]["homeserver"] = json!(matrix.synapse.url);
    config["model_list"][0]["api_base"] = json!(format!("http://127.0.0.1:{model_port}/v1"));
    config["agents"]["defaults"]["workspace"] = json!(home.join("workspace"));
    config["gateway"]["port"] = json!(crate::support::ports::free_port());
    let (_gateway, log_path) = start_gateway(&[&qemu, &binary], &home, &config, &agent);
    let gateway_log = || fs::read_to_string(&log_path).unwrap_or_default();
    let reached = (0..8).any(|attempt| {
        let sent = matrix
            .client
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/a{attempt}"),
                Some(&admin),
                &json!({ "msgtype": "m.text", "body": "@balthasar-pi:magi say the arm64-marker",
                         "m.mentions": { "user_ids": ["@balthasar-pi:magi"] } }),
            )
            .unwrap();
        assert!(sent.ok(), "{}", sent.describe());
        wait_for(std::time::Duration::from_secs(15), || {
            requests.lock().unwrap().iter().any(|r| r.contains("arm64-marker"))
        })
    });
    assert!(
        reached,
        "the admin's message never reached the model\n{}",
        gateway_log()
    );
}

/// A stand-in model on loopback: answers every chat completion with
/// `answer` (a stream when asked for one) and keeps each request body.
fn stand_in_model(answer: &'static str) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let body = String::from_utf8_lossy(&body).into_owned();
            let streamed = serde_json::from_str::<Value>(&body).is_ok_and(|b| b["stream"] == json!(true));
            seen.lock().unwrap().push(body.clone());
            // A message with `exec-marker` gets a call of the exec tool
            // first; its output (`ran-by-42`, only if a shell ran it) comes
            // back in the next request, which gets `answer`.
            let call = body.contains("exec-marker") && !body.contains("ran-by-42");
            let tool_calls = json!([{ "index": 0, "id": "call-1", "type": "function",
                "function": { "name": "exec",
                              "arguments": json!({ "action": "run", "command": "printf 'ran-by-%s' 42" }).to_string() } }]);
            let finish = if call { "tool_calls" } else { "stop" };
            let (kind, reply) = if streamed {
                let delta = if call {
                    json!({ "role": "assistant", "tool_calls": tool_calls })
                } else {
                    json!({ "role": "assistant", "content": answer })
                };
                let chunk = json!({ "id": "c", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{ "index": 0, "delta": delta }] });
                let done = json!({ "id": "c", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{ "index": 0, "delta": {}, "finish_reason": finish }] });
                (
                    "text/event-stream",
                    format!("data: {chunk}\n\ndata: {done}\n\ndata: [DONE]\n\n"),
                )
            } else {
                let message = if call {
                    json!({ "role": "assistant", "content": "", "tool_calls": tool_calls })
                } else {
                    json!({ "role": "assistant", "content": answer })
                };
                let reply = json!({ "id": "c", "object": "chat.completion", "model": "m",
                    "choices": [{ "index": 0, "finish_reason": finish, "message": message }] });
                ("application/json", reply.to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (port, requests)
}

/// Registers `user` on the test Synapse and logs it in; its access token.
fn matrix_user(
    client: &agent_appliance::on_host::bootstrap::client::Client,
    register: &Path,
    secret: &str,
    user: &str,
) -> String {
    let output = Command::new(register)
        .args(["--user", user, "--password", "pw-of-the-test", "--no-admin"])
        .args(["--shared-secret", secret, client.base()])
        .output()
        .unwrap();
    assert!(output.status.success(), "registering {user}\n{}", output_text(&output));
    let login = client
        .post(
            "/_matrix/client/v3/login",
            None,
            &json!({ "type": "m.login.password",
                     "identifier": { "type": "m.id.user", "user": user },
                     "password": "pw-of-the-test" }),
        )
        .unwrap();
    assert!(login.ok(), "{}", login.describe());
    login.str("access_token").unwrap().to_string()
}

/// The PicoClaw gateway, stopped (and reaped) when dropped.
struct Gateway(std::process::Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `done` every 200 ms until it holds or `within` passes.
fn wait_for(within: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}

/// The real PicoClaw gateway on the generated balthasar config, against a
/// Synapse of its own on loopback (server name `magi`, as generated) and a
/// stand-in model: it logs in with the env token; in a room with the admin
/// and a stranger, a mention from the stranger never reaches the model
/// while the admin's (`allow_from`) do, and the answer comes back into the
/// room (before `matrix:` in `allow_from`, the admin never got in); with
/// `remote-exec` a call of the exec tool from chat runs a shell command,
/// and with `allow_remote` off (no `remote-exec`) the same call is refused.
#[test]
fn picoclaw_on_synapse_answers_the_admin_and_execs_only_with_remote_exec() {
    use std::time::Duration;
    let Some(picoclaw) = picoclaw() else { return };
    let Some(venv) = crate::support::synapse::venv() else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let matrix = TestMatrix::start(&venv, temp.path());
    let (client, synapse) = (&matrix.client, &matrix.synapse);
    let url = synapse.url.clone();
    let admin = matrix.user("gendo");
    let agent = matrix.user("balthasar");
    let stranger = matrix.user("stranger");
    // The appliance's Synapse turns invites off; a public room is joined by ID.
    let room = crate::support::synapse::create_room(client, &admin, "public_chat");
    for token in [&agent, &stranger] {
        let join = client
            .post(&format!("/_matrix/client/v3/join/{room}"), Some(token), &json!({}))
            .unwrap();
        assert!(join.ok(), "{}", join.describe());
    }

    let (model_port, requests) = stand_in_model("pong-from-the-stand-in");
    let (_, agent_model, _, text) = configs(AgentKind::Picoclaw)
        .into_iter()
        .find(|(label, ..)| label == "balthasar in appliance.toml")
        .unwrap();
    assert_eq!(agent_model.allowed_users, ["@gendo:magi"]);
    let home = temp.path().join("picoclaw");
    fs::create_dir_all(&home).unwrap();
    // Only what points at this machine changes; `allow_from` stays as generated.
    let mut config: Value = serde_json::from_str(&text).unwrap();
    config["channel_list"]["matrix"]["settings"]["homeserver"] = json!(url);
    config["model_list"][0]["api_base"] = json!(format!("http://127.0.0.1:{model_port}/v1"));
    config["agents"]["defaults"]["workspace"] = json!(home.join("workspace"));
    config["gateway"]["port"] = json!(crate::support::ports::free_port());
    let (gateway, log_path) = start_gateway(&[&picoclaw], &home, &config, &agent);
    let gateway_log = || fs::read_to_string(&log_path).unwrap_or_default();
    let send = |token: &str, body: &str, txn: &str| {
        let sent = client
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"),
                Some(token),
                &json!({ "msgtype": "m.text", "body": body, "m.mentions": { "user_ids": ["@balthasar:magi"] } }),
            )
            .unwrap();
        assert!(sent.ok(), "{}", sent.describe());
    };
    let asked = |marker: &str| requests.lock().unwrap().iter().any(|r| r.contains(marker));
    // PicoClaw drops events from before its channel started, which its
    // output does not tell: the admin asks until one reaches the model.
    let reached = (0..6).any(|attempt| {
        send(&admin, "@balthasar:magi say the admin-marker-1", &format!("a{attempt}"));
        wait_for(Duration::from_secs(15), || asked("admin-marker-1"))
    });
    assert!(
        reached,
        "the admin's message never reached the model\n{}",
        gateway_log()
    );
    // Now the channel is up: the stranger, then the admin again; the
    // admin's second message reaching the model shows the stranger's was
    // seen before it and dropped.
    send(&stranger, "@balthasar:magi say the stranger-marker", "s1");
    send(&admin, "@balthasar:magi say the admin-marker-2", "a-second");
    assert!(
        wait_for(Duration::from_secs(90), || asked("admin-marker-2")),
        "the admin's second message never reached the model\n{}",
        gateway_log()
    );
    assert!(!asked("stranger-marker"), "the stranger's message reached the model");
    // `remote-exec`: from chat, the admin's request runs a shell command
    // (exec with `allow_remote`), whose output goes back to the model.
    send(&admin, "@balthasar:magi run it, exec-marker", "a-exec");
    assert!(
        wait_for(Duration::from_secs(90), || asked("ran-by-42")),
        "the exec tool's output never reached the model\n{}\nrequests: {:?}",
        gateway_log(),
        requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains("exec-marker"))
            .collect::<Vec<_>>()
    );
    let answered = || {
        client
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
                Some(&admin),
            )
            .is_ok_and(|reply| {
                reply.body["chunk"].as_array().is_some_and(|events| {
                    events.iter().any(|e| {
                        e["sender"] == json!("@balthasar:magi")
                            && e["content"]["body"]
                                .as_str()
                                .is_some_and(|b| b.contains("pong-from-the-stand-in"))
                    })
                })
            })
    };
    assert!(
        wait_for(Duration::from_secs(60), answered),
        "PicoClaw's answer never came back into the room\n{}",
        gateway_log()
    );
    assert!(!asked("stranger-marker"), "the stranger's message reached the model");
    drop(gateway);

    // Without `remote-exec` (as rendered: `allow_remote` and cron's
    // `allow_command` off), the same call of the exec tool from chat is
    // refused: the model gets the refusal, and no shell ran.
    let home = temp.path().join("picoclaw-no-remote-exec");
    fs::create_dir_all(&home).unwrap();
    config["tools"]["exec"]["allow_remote"] = json!(false);
    config["tools"]["cron"]["allow_command"] = json!(false);
    config["agents"]["defaults"]["workspace"] = json!(home.join("workspace"));
    config["gateway"]["port"] = json!(crate::support::ports::free_port());
    let (_gateway, log_path) = start_gateway(&[&picoclaw], &home, &config, &agent);
    let gateway_log = || fs::read_to_string(&log_path).unwrap_or_default();
    requests.lock().unwrap().clear();
    let tool_answered = || {
        requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("exec-marker-off") && r.contains(r#""role":"tool""#))
    };
    let refused = (0..6).any(|attempt| {
        send(
            &admin,
            "@balthasar:magi run it, exec-marker-off",
            &format!("off{attempt}"),
        );
        wait_for(Duration::from_secs(15), tool_answered)
    });
    assert!(
        refused,
        "the exec tool's answer never reached the model\n{}",
        gateway_log()
    );
    assert!(
        !asked("ran-by-42"),
        "a shell ran without `remote-exec`\n{}",
        gateway_log()
    );
}

/// A Synapse of the test's own on loopback, configured as the default
/// spec's (server name `magi`), and a client for it.
struct TestMatrix {
    synapse: crate::support::synapse::Synapse,
    client: agent_appliance::on_host::bootstrap::client::Client,
    register: PathBuf,
    shared_secret: String,
}

impl TestMatrix {
    fn start(venv: &Path, dir: &Path) -> TestMatrix {
        let (data, state) = (dir.join("synapse"), dir.join("state"));
        let port = crate::support::ports::free_port();
        let settings = crate::support::synapse::settings(&data, &state, port);
        assert_eq!(settings["server_name"], json!("magi"));
        let shared_secret = crate::support::synapse::write_test_secrets(&settings);
        let url = format!("http://127.0.0.1:{port}");
        let mut synapse = crate::support::synapse::Synapse::spawn(venv, &data, &settings, &url, &[]);
        synapse.wait_ready();
        let client = agent_appliance::on_host::bootstrap::client::Client::new(
            &url,
            std::time::Instant::now() + std::time::Duration::from_secs(300),
            std::time::Duration::from_secs(30),
        );
        TestMatrix {
            synapse,
            client,
            register: venv.join("bin/register_new_matrix_user"),
            shared_secret,
        }
    }

    /// Registers `user` and logs it in; its access token.
    fn user(&self, user: &str) -> String {
        matrix_user(&self.client, &self.register, &self.shared_secret, user)
    }
}

/// Starts `picoclaw gateway` on `config` (written to `home`) with the
/// Matrix token in the env, as the sandbox does; waits until it is up.
/// `program`: PicoClaw, or an emulator and PicoClaw.
fn start_gateway(program: &[&Path], home: &Path, config: &Value, token: &str) -> (Gateway, PathBuf) {
    let config_path = home.join("config.json");
    fs::write(&config_path, config.to_string()).unwrap();
    let log_path = home.join("gateway.log");
    let log = fs::File::create(&log_path).unwrap();
    let gateway = Gateway(
        Command::new(program[0])
            .args(&program[1..])
            .args(["--no-color", "gateway"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home)
            .env("PICOCLAW_HOME", home)
            .env("PICOCLAW_CONFIG", &config_path)
            .env("PICOCLAW_CHANNELS_MATRIX_ACCESS_TOKEN", token)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("failed to start picoclaw gateway"),
    );
    let gateway_log = || fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_for(std::time::Duration::from_secs(60), || gateway_log()
            .contains("Gateway started")),
        "PicoClaw's gateway did not start:\n{}",
        gateway_log()
    );
    (gateway, log_path)
}
