//! The NixOS VM tests (nix/checks/), evaluated here without nixpkgs: a STUB
//! nixpkgs whose `testers.runNixOSTest` returns its arguments, whose image
//! and script builders return theirs, and a stub `lib` with the functions
//! the checks call. What is asserted is what the checks hand to nixpkgs:
//! the scenario test runs tests/rehearsal/scenario.py with every agent of
//! the hub and the rehearsal's steps, the inference sandbox's image is the
//! stand-in under the real image's name, tag and description, the models'
//! pull is replaced by a check of the stand-in's list, and the VM node keeps
//! every generated `docker run` option but the GPU ones. The test script
//! itself runs in Python with a STUB `machine`, its scenario.py commands
//! with the real scenario.py against no homeserver: the flags are ones
//! scenario.py accepts, and its failure fails the test. Booting the VM is
//! left to `nix flake check` on a machine with nixpkgs and KVM.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{
    assert_contains, assert_lacks, eval_json, json_strings, nix_instantiate, require_tool, root, with_stub,
};

/// A STUB nixpkgs and `lib` for evaluating nix/checks/*.nix: builders
/// return their arguments, packages are labels.
const STUB: &str = r#"
let
  lib = rec {
    inherit (builtins) attrNames mapAttrs elemAt length head filter elem all;
    importJSON = path: builtins.fromJSON (builtins.readFile path);
    findFirst = pred: default: list:
      let found = builtins.filter pred list; in if found == [ ] then default else builtins.head found;
    optional = cond: x: if cond then [ x ] else [ ];
    concatStringsSep = builtins.concatStringsSep;
    concatMapStringsSep = sep: f: list: builtins.concatStringsSep sep (map f list);
    concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
    genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
    removePrefix = prefix: s:
      if hasPrefix prefix s then builtins.substring (builtins.stringLength prefix) (-1) s else s;
    # Keeps the override visible, so the test can tell forced values.
    mkForce = value: { _stubForce = value; };
    mkIf = condition: content: { _if = condition; inherit content; };
    mkOverride = _priority: value: value;
    # The program and, for a stub script, its text.
    getExe = pkg: { stubExe = "${pkg.name}/bin/${pkg.meta.mainProgram or pkg.name}"; stubText = pkg.stubText or null; };
    getExe' = pkg: exe: "${pkg.name}/bin/${exe}";
    getName = pkg: pkg.pname or pkg.name;
    throwIfNot = cond: msg: value: if cond then value else throw msg;
    versions.major = v: builtins.head (builtins.splitVersion v);
    versionAtLeast = a: b: builtins.compareVersions a b >= 0;
    escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";
    escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);
  };
  package = name: { inherit name; pname = name; version = "1"; type = "derivation"; };
in
{
  inherit lib;
  pkgs = {
    inherit lib;
    testers.runNixOSTest = args: args;
    dockerTools = {
      streamLayeredImage = args: { type = "derivation"; stubArgs = args; };
      fakeNss.override = args: { pname = "fake-nss"; stubNss = args; };
    };
    writeShellApplication = args: {
      inherit (args) name;
      stubText = args.text;
      stubInputs = map (p: p.name) args.runtimeInputs;
      meta.mainProgram = args.name;
    };
    python3 = package "python3" // { interpreter = "/stub/python3/bin/python3"; outPath = "/stub/python3"; };
    writeText = name: text: { inherit name; stubText = text; outPath = "/stub/${name}"; };
    curl = package "curl";
    jq = package "jq";
    coreutils = package "coreutils";
    cacert = package "cacert";
    busybox = package "busybox";
    ollama-cpu = package "ollama-cpu";
    gvisor = package "gvisor" // { version = "20260406.0"; };
  };
}
"#;

/// Evaluates the VM test nix/checks/`check` of the hub with the STUB:
/// `body` is a Nix expression in which `test` (what the check hands to
/// `runNixOSTest`), `lib`, `pkgs`, `generated` and `root` (the repository)
/// are bound.
fn eval_check(check: &str, body: &str) -> Option<Value> {
    nix_instantiate()?;
    let bindings = format!(
        r#"
  inherit (stub) lib pkgs;
  generated = import (root + "/nix/generated.nix") (root + "/generated");
  test = import (root + "/nix/checks/{check}") {{ inherit pkgs lib generated; host = "hub"; appliance = "stub-module"; }};"#
    );
    let (_stub, expression) = with_stub(STUB, &bindings, body);
    Some(eval_json(&expression))
}

/// The scenario check, its node, the shared node module (with 4 cores) and
/// what they start from (the hub's generated sandbox values, the daemon
/// settings, the inference image's description), as JSON.
fn evaluate() -> Option<Value> {
    eval_check(
        "hub-scenario.nix",
        r#"
let
  node = test.nodes.machine { inherit lib; };
  image = node.virtualisation.oci-containers.containers.ollama.imageStream._stubForce.stubArgs;
  models = node.systemd.services.appliance-models.serviceConfig.ExecStart._stubForce;
  moduleArgs = {
    inherit lib pkgs;
    config = { appliance = { enable = true; host = "hub"; }; virtualisation.cores = 4; };
  };
  shared = import (root + "/nix/checks/hub-node.nix") { inherit generated; host = "hub"; appliance = "stub-module"; } moduleArgs;
  generatedModule = (generated.hosts.hub.module moduleArgs).config.content;
in {
  inherit (test) name testScript;
  imports = builtins.length node.imports;
  image = image // { contents = map (p: p.name or p.pname) image.contents; };
  standin = (builtins.head image.contents).stubText;
  real = lib.importJSON (root + "/generated/images/ollama-cuda.json") // { packages = null; };
  modelsUnit = models;
  shared = {
    appliance = { inherit (shared.appliance) enable host; };
    inherit (shared) imports;
    runtimes = builtins.mapAttrs (_: r: r.runtimeArgs._stubForce) shared.virtualisation.docker.daemon.settings.runtimes;
    options = builtins.mapAttrs (_: c: c.extraOptions._stubForce) shared.appliance.sandboxes;
    toolkit = shared.hardware.nvidia-container-toolkit.enable._stubForce;
  };
  generatedOptions = builtins.mapAttrs (_: c: c.extraOptions) generatedModule.appliance.sandboxes;
  daemon = builtins.mapAttrs (_: r: r.runtimeArgs) (lib.importJSON (root + "/generated/hosts/hub/docker-daemon.json")).runtimes;
}
"#,
    )
}

/// The JSON the scenario check embeds in its test script (`facts`).
fn facts(script: &str) -> Value {
    let start = script
        .find("json.loads(r\"\"\"")
        .expect("the test script embeds its facts")
        + 15;
    let end = start + script[start..].find("\"\"\")").unwrap();
    serde_json::from_str(&script[start..end]).expect("the embedded facts are JSON")
}

/// The models of the default spec's inference.
fn default_models() -> Vec<String> {
    let appliance = agent_appliance::operator::commands::load(&root().join("appliance.toml")).unwrap();
    appliance.inference.unwrap().models
}

#[test]
fn the_vm_scenario_runs_the_rehearsal_client_with_every_agent_of_the_hub() {
    let Some(out) = evaluate() else {
        return;
    };
    assert_eq!(out["name"], "appliance-hub-scenario");
    // The shared VM node (hub-node.nix), which imports the flake's module.
    assert_eq!(out["imports"], 1);
    let script = out["testScript"].as_str().unwrap();
    let facts = facts(script);

    // Every agent of host `hub`, with the model the spec gives it.
    let appliance = agent_appliance::operator::commands::load(&root().join("appliance.toml")).unwrap();
    let agents: BTreeMap<&str, &str> = appliance
        .agents
        .values()
        .filter(|a| a.host == "hub")
        .map(|a| (a.name.as_str(), a.model.as_deref().unwrap()))
        .collect();
    assert_eq!(agents.len(), 3, "{agents:?}");
    assert_eq!(facts["agents"], json!(agents));
    // The rehearsal's steps (tests/rehearsal/main.rs), code by the agent
    // with a code sandbox, as the bootstrap made the room and the admin.
    assert_eq!(
        json_strings(&facts["steps"]),
        ["joined", "mention", "unmentioned", "stranger", "code", "browse", "loop"]
    );
    assert_eq!(facts["codeAgent"], "casper");
    // The browse step: melchior (OpenClaw, as in the rehearsal) reads a
    // page on a globally routable address of the VM's own loopback.
    assert_eq!(facts["browserAgent"], "melchior");
    assert_eq!(facts["webAddress"], "192.31.196.80");
    assert_eq!(facts["room"], "#magi:magi");
    assert_eq!(facts["admin"], "gendo");
    assert_eq!(facts["homeserver"], "http://127.0.0.1:8008");
    assert_eq!(
        facts["registrationSecret"],
        "/var/lib/appliance/secrets/_host/synapse/registration-shared-secret"
    );
    assert_eq!(facts["python"], "/stub/python3/bin/python3");
    assert!(
        facts["scenario"].as_str().unwrap().ends_with("-scenario.py"),
        "{}",
        facts["scenario"]
    );
    assert_eq!(facts["inferenceSandbox"], "ollama");
    // The warden's step: casper halted and looping with melchior, melchior
    // killed; the files where the bootstrap and the warden put them.
    assert_eq!(
        facts["warden"],
        json!({
            "opsRoom": "#appliance_ops:magi",
            "tokenFile": "/var/lib/appliance/secrets/_host/bootstrap/matrix-token",
            "auditFile": "/var/lib/appliance/warden/audit.jsonl",
            "loopBudget": 8,
            "loopAgents": ["casper", "melchior"],
            "agentTokens": {
                "casper": "/var/lib/appliance/secrets/casper/matrix-token",
                "melchior": "/var/lib/appliance/secrets/melchior/matrix-token",
            },
            "kill": ["melchior"],
        })
    );
    // The same files the warden and the rehearsal use.
    assert!(facts["warden"]["auditFile"].as_str().unwrap().ends_with(&format!(
        "/{}/{}",
        agent_appliance::on_host::warden::WARDEN_DIR,
        agent_appliance::on_host::warden::AUDIT_FILE
    )));

    // The script: the boot checks first, then scenario.py with those
    // flags, and a non-zero exit fails the test.
    for needle in [
        "machine.wait_for_unit(\"appliance-bootstrap.service\")",
        "machine.wait_for_unit(\"appliance-ready.target\")",
        "appliance admin password {facts['admin']}",
        "facts[\"python\"], facts[\"scenario\"]",
        "[f\"--agent={name}={model}\" for name, model in sorted(agents.items())]",
        "\"--registration-secret-file=\" + facts[\"registrationSecret\"]",
        "\"--standin-log=\" + standin_log",
        "[\"--step=\" + step for step in facts[\"steps\"]]",
        "\"--code-agent=\" + facts[\"codeAgent\"]",
        "\"--browser-agent=\" + facts[\"browserAgent\"]",
        "\"--page-url=http://\" + facts[\"webAddress\"] + \"/index.html\"",
        "\"--page-title=\" + facts[\"pageTitle\"]",
        "machine.wait_for_open_port(80, facts[\"webAddress\"])",
        "--agent-log={name}=/root/scenario/{name}.log",
        "if status != 0:\n    raise Exception(",
        "print(machine.execute(\"cat /root/scenario/results.json\")[1])",
        "machine.wait_for_unit(\"appliance-warden.service\")",
        "\"--step=warden\"",
        "\"--audit-file=\" + w[\"auditFile\"]",
        "[f\"--agent-token={name}={path}\" for name, path in sorted(w[\"agentTokens\"].items())]",
        "[f\"--kill={name}\" for name in w[\"kill\"]]",
        "raise Exception(f\"scenario.py --step=warden failed",
    ] {
        assert!(script.contains(needle), "the test script lacks `{needle}`:\n{script}");
    }
    python_parses(script);
}

/// The test driver runs the script as Python: it must at least parse.
fn python_parses(script: &str) {
    let Some(python) = require_tool("python3", "parsing the VM test's script") else {
        return;
    };
    let output = Command::new(python)
        .args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(script.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        output.status.success(),
        "the test script is not Python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_inference_image_is_the_stand_in_under_the_real_name_and_description() {
    let Some(out) = evaluate() else {
        return;
    };
    let image = &out["image"];
    let real = &out["real"];
    // Same name and tag as the sandbox runs (generated/appliance.json).
    assert_eq!(
        format!("{}:{}", image["name"].as_str().unwrap(), image["tag"].as_str().unwrap()),
        "agent-appliance/ollama-cuda:0.32"
    );
    assert_eq!(image["tag"], real["tag"]);
    // The real image's description: entry point, user, environment,
    // writable directories.
    assert_eq!(image["config"]["Entrypoint"], real["entrypoint"]);
    assert_eq!(image["config"]["Entrypoint"], json!(["ollama", "serve"]));
    assert_eq!(image["config"]["Env"], real["env"]);
    let account = &real["account"];
    assert_eq!(
        image["config"]["User"],
        format!("{}:{}", account["uid"], account["gid"])
    );
    let commands = image["fakeRootCommands"].as_str().unwrap();
    for dir in real["writable"].as_array().unwrap() {
        let path = dir["path"].as_str().unwrap();
        assert_contains(commands, format!("chown {}:{} .'{path}'", dir["uid"], dir["gid"]));
    }
    // Named a stand-in: its label, and an `ollama` that runs the stand-in.
    assert_eq!(
        image["config"]["Labels"]["org.opencontainers.image.version"],
        "stand-in"
    );
    assert_eq!(json_strings(&image["contents"])[0], "ollama");
    let standin = out["standin"].as_str().unwrap();
    assert_contains(standin, "STAND-IN for Ollama");
    assert_contains(standin, "-standin_model.py");
    assert_contains(
        standin,
        "--log=/var/lib/ollama/standin-requests.jsonl --server-name=magi",
    );
    for model in &default_models() {
        assert_contains(standin, format!("--model={model}"));
    }
}

#[test]
fn the_models_are_listed_by_the_stand_in_not_pulled() {
    let Some(out) = evaluate() else {
        return;
    };
    let unit = &out["modelsUnit"];
    assert_eq!(unit["stubExe"], "appliance-models-standin/bin/appliance-models-standin");
    let text = unit["stubText"].as_str().unwrap();
    assert_lacks(text, "/api/pull");
    assert_contains(text, "url=http://10.88.0.2:11434");
    assert_contains(text, "curl -fsS \"$url/api/tags\"");
    assert!(text.contains("exit 1"), "a missing model must fail the unit: {text}");
    let models = default_models().join(" ");
    assert_contains(text, format!("for model in {models}; do"));
}

#[test]
fn the_vm_node_keeps_every_generated_option_but_the_gpu_and_the_cpu_count() {
    let Some(out) = evaluate() else {
        return;
    };
    let shared = &out["shared"];
    assert_eq!(shared["appliance"], json!({ "enable": true, "host": "hub" }));
    assert_eq!(shared["imports"], json!(["stub-module"]));
    assert_eq!(shared["toolkit"], false);
    // Every runtime keeps its generated flags but nvproxy's.
    let daemon = out["daemon"].as_object().unwrap();
    assert!(daemon["runsc-gpu"].to_string().contains("--nvproxy"), "{daemon:?}");
    for (name, args) in daemon {
        let kept: Vec<&str> = json_strings(args)
            .into_iter()
            .filter(|a| !a.starts_with("--nvproxy"))
            .collect();
        assert_eq!(json_strings(&shared["runtimes"][name]), kept, "runtime {name}");
    }
    // Every sandbox keeps its generated options but the GPU device, with
    // `--cpus` at most the VM's 4 cores.
    let generated = out["generatedOptions"].as_object().unwrap();
    assert_eq!(generated.len(), 7);
    assert!(generated["ollama"].to_string().contains("--device=nvidia.com/gpu=all"));
    for (name, options) in generated {
        let expected: Vec<String> = json_strings(options)
            .into_iter()
            .filter(|o| !o.starts_with("--device=nvidia.com/gpu="))
            .map(|o| {
                if o == "--cpus=8" {
                    "--cpus=4".to_string()
                } else {
                    o.to_string()
                }
            })
            .collect();
        assert_eq!(json_strings(&shared["options"][name]), expected, "sandbox {name}");
    }
    assert!(json_strings(&shared["options"]["ollama"]).contains(&"--cpus=4"));
}

/// Runs the scenario test's script in Python with a STUB `machine` that
/// answers the boot checks with canned output and runs every scenario.py
/// command it is given with the real tests/rehearsal/scenario.py against
/// a homeserver that is not there (127.0.0.1:9, discard): scenario.py must
/// accept the flags (exit 1 after failing to connect, not argparse's 2).
/// The stub then reports `full_status` for the full run, and the script
/// must raise exactly when that is non-zero.
const STUB_DRIVER: &str = r#"
import json, shlex, subprocess, sys, tempfile, os

# failing: which scenario.py run exits 1 ("scenario", "warden" or "none").
script_path, scenario_py, daemon_json, failing = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
script = open(script_path).read()
runtimes = json.load(open(daemon_json))["runtimes"]
scratch = tempfile.mkdtemp()
password = os.path.join(scratch, "password")
open(password, "w").write("stub-password\n")
runs = []

def scenario_argv(cmd):
    argv = []
    for word in shlex.split(cmd):
        if word.startswith(">") or word.startswith("2>"):
            break
        argv.append(word)
    out = [sys.executable, scenario_py]
    for arg in argv[2:]:
        if arg.startswith("--homeserver="):
            arg = "--homeserver=http://127.0.0.1:9"
        elif arg.startswith("--admin-password-file="):
            arg = "--admin-password-file=" + password
        elif arg.startswith("--json="):
            arg = "--json=" + os.path.join(scratch, "results.json")
        out.append(arg)
    return argv, out

class StubMachine:
    def wait_for_unit(self, unit, timeout=900):
        pass
    def wait_for_open_port(self, port, addr="localhost", timeout=900):
        pass
    def wait_until_succeeds(self, cmd, timeout=900):
        return self.succeed(cmd)
    def succeed(self, cmd, timeout=None):
        status, out = self.execute(cmd)
        assert status == 0, cmd
        return out
    def execute(self, cmd, timeout=900):
        if "scenario.py" in cmd:
            original, argv = scenario_argv(cmd)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            assert done.returncode == 1 and "connect" in done.stderr, (argv, done.returncode, done.stderr)
            runs.append(original)
            kind = "warden" if "--step=warden" in original else (
                "scenario" if any(a.startswith("--agent-log=") for a in original) else "warm-up")
            return (1 if kind == failing else 0), ""
        if "docker info" in cmd:
            return 0, json.dumps({name: {"path": "/stub/bin/runsc"} for name in runtimes})
        if "config.json" in cmd:
            return 0, json.dumps({"allowCustomHomeservers": False})
        if "admin password" in cmd:
            return 0, "stub-password\n"
        if ".HostConfig.Runtime" in cmd:
            return 0, "runsc\n"
        if "range .Mounts" in cmd:
            return 0, "/stub/volume\n"
        return 0, ""

try:
    exec(compile(script, "testScript", "exec"), {"machine": StubMachine()})
    raised = None
except Exception as e:
    raised = str(e)
print(json.dumps({"raised": raised, "runs": runs}))
"#;

fn run_script_with_stub_machine(script: &str, failing: &str) -> Option<Value> {
    let python = require_tool("python3", "running the VM test's script with a stub machine")?;
    let scratch = tempfile::tempdir().unwrap();
    let script_path = scratch.path().join("testScript.py");
    std::fs::write(&script_path, script).unwrap();
    let driver = scratch.path().join("driver.py");
    std::fs::write(&driver, STUB_DRIVER).unwrap();
    let output = Command::new(python)
        .arg(&driver)
        .arg(&script_path)
        .arg(root().join("tests/rehearsal/scenario.py"))
        .arg(root().join("generated/hosts/hub/docker-daemon.json"))
        .arg(failing)
        .output()
        .unwrap();
    crate::support::assert_succeeded("the stub driver", &output);
    // The script prints too: the driver's report is the last line.
    let stdout = String::from_utf8_lossy(&output.stdout);
    Some(serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap())
}

#[test]
fn the_scenario_script_passes_flags_scenario_py_accepts_and_fails_with_it() {
    let Some(out) = evaluate() else {
        return;
    };
    let script = out["testScript"].as_str().unwrap();
    let Some(passing) = run_script_with_stub_machine(script, "none") else {
        return;
    };
    assert_eq!(passing["raised"], Value::Null, "{passing}");
    let runs = passing["runs"].as_array().unwrap();
    // The warm-up (mentions until every agent answered), the full run, the
    // warden's step.
    assert_eq!(runs.len(), 3, "{passing}");
    let full: Vec<&str> = json_strings(&runs[1]);
    for flag in [
        "--step=joined",
        "--step=mention",
        "--step=unmentioned",
        "--step=stranger",
        "--step=code",
        "--step=loop",
        "--step=browse",
        "--browser-agent=melchior",
        "--page-url=http://192.31.196.80/index.html",
        "--page-title=VM test page 5c1e",
        "--code-agent=casper",
        "--agent=balthasar=glm-4.7-flash:q4_K_M",
        "--agent=casper=qwen3.5:27b-q4_K_M",
        "--agent=melchior=gemma4:26b-a4b-it-q8_0",
        "--agent-log=melchior=/root/scenario/melchior.log",
        "--loop-agents=balthasar,casper,melchior",
        "--standin-log=/stub/volume/standin-requests.jsonl",
    ] {
        assert!(full.contains(&flag), "the full run lacks {flag}: {full:?}");
    }
    assert!(json_strings(&runs[0]).contains(&"--step=mention"));
    let warden: Vec<&str> = json_strings(&runs[2]);
    for flag in [
        "--step=warden",
        "--code-agent=casper",
        "--loop-agents=casper,melchior",
        "--ops-room=#appliance_ops:magi",
        "--loop-budget=8",
        "--kill=melchior",
        "--agent-token=melchior=/var/lib/appliance/secrets/melchior/matrix-token",
        "--registration-secret-file=/var/lib/appliance/secrets/_host/synapse/registration-shared-secret",
    ] {
        assert!(warden.contains(&flag), "the warden's run lacks {flag}: {warden:?}");
    }
    // A failing scenario, or a failing warden step, fails the test.
    for (run, says) in [
        ("scenario", "scenario.py failed (exit 1)"),
        ("warden", "scenario.py --step=warden failed (exit 1)"),
    ] {
        let failing = run_script_with_stub_machine(script, run).unwrap();
        let raised = failing["raised"].as_str().unwrap_or_default();
        assert!(raised.contains(says), "{failing}");
    }
}

#[test]
fn the_boot_check_runs_sleepers_of_every_sandbox_image_on_the_same_vm_node() {
    let Some(out) = eval_check(
        "hub.nix",
        r#"
let
  inherit (test.nodes.machine) imports;
  sleepers = builtins.elemAt imports 1 { inherit lib; };
in {
  inherit (test) name;
  sameChecks = test.testScript == import (root + "/nix/checks/hub-boot-checks.nix") { inherit lib generated; host = "hub"; };
  imports = builtins.length imports;
  images = builtins.mapAttrs (_: c: let a = c.imageStream._stubForce.stubArgs; in "${a.name}:${a.tag}") sleepers.virtualisation.oci-containers.containers;
  sandboxes = generated.hosts.hub.sandboxes;
}
"#,
    ) else {
        return;
    };
    assert_eq!(out["name"], "appliance-hub-boots");
    assert_eq!(out["sameChecks"], true);
    // The shared VM node (hub-node.nix) and the sleepers (sleepers.nix).
    assert_eq!(out["imports"], 2);
    // Every sandbox's image replaced by a sleeper of the same name and tag.
    assert_eq!(out["images"], out["sandboxes"]);
}

/// The upgrade VM test (nix/checks/upgrade.nix), evaluated with the STUB:
/// the hub's node with sleepers and backups on, a `broken` specialisation
/// whose casper image exits at start (above the base's override) and whose
/// unit migrates casper's state, a backup config the host's `backup.json`
/// schema reads, and a test script that is Python and runs `appliance
/// upgrade --system` on the specialisation. Running it needs real Nix.
#[test]
fn the_upgrade_vm_test_switches_to_a_broken_specialisation_and_checks_the_rollback() {
    let Some(out) = eval_check(
        "upgrade.nix",
        r#"
let
  node = test.nodes.machine;
  broken = node.specialisation.broken.configuration;
in {
  inherit (test) name testScript;
  backup = { inherit (node.appliance.backup) enable repository passwordFile; config = builtins.fromJSON node.appliance.backup.configFile.stubText; };
  brokenEntrypoint = broken.virtualisation.oci-containers.containers.casper.imageStream.stubArgs.config.Entrypoint;
  brokenImage = let a = broken.virtualisation.oci-containers.containers.casper.imageStream.stubArgs; in "${a.name}:${a.tag}";
  casper = generated.hosts.hub.sandboxes.casper;
  migrates = broken.systemd.services.casper-migrates.script;
}
"#,
    ) else {
        return;
    };
    assert_eq!(out["name"], "appliance-hub-upgrade");
    assert_eq!(out["brokenEntrypoint"], json!(["false"]));
    assert_eq!(out["brokenImage"], out["casper"]);
    assert!(
        out["migrates"]
            .as_str()
            .unwrap()
            .contains("appliance-casper-state/_data/schema")
    );
    assert_eq!(out["backup"]["enable"], true);
    let config: agent_appliance::on_host::backup::BackupConfig =
        serde_json::from_value(out["backup"]["config"].clone())
            .expect("the VM test's backup.json is one the host reads");
    assert_eq!(config.repository, out["backup"]["repository"]);
    assert_eq!(config.password_file, out["backup"]["passwordFile"]);
    assert!(config.volumes.iter().any(|v| v.name == "appliance-casper-state"));
    let script = out["testScript"].as_str().unwrap();
    for needle in [
        "appliance upgrade --dry-run --system",
        "appliance upgrade --system",
        "upgrade-standin-agent.py",
        "After the rollback: healthy, every agent answers",
        "appliance audit verify",
    ] {
        assert!(script.contains(needle), "the test script lacks `{needle}`:\n{script}");
    }
    python_parses(script);
}
