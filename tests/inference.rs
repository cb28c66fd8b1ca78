//! The model pull (modules/pull-models.sh, what the `appliance-models` unit
//! runs with the URL and the spec's models) against a stand-in Ollama API on loopback:
//! a small Python server that answers `/api/version` and `/api/pull` the way
//! Ollama does (`{"status":"success"}`, or HTTP 500 with `{"error": ...}`).
//! It is a stand-in: no model is downloaded; the real pull is checked on a
//! GPU host (docs/sandboxes.md).

use std::process::{Command, Stdio};

use crate::support::{assert_contains, first_line_of, require_tool, root};

const STANDIN: &str = r#"
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
FAIL = sys.argv[1]
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        self.reply(200, {"version": "stand-in"}) if self.path == "/api/version" else self.reply(404, {})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(sys.argv[2], "a") as log: log.write(body["model"] + " " + str(body["stream"]) + "\n")
        if body["model"] == FAIL:
            self.reply(500, {"error": "pull model manifest: file does not exist"})
        else:
            self.reply(200, {"status": "success"})
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

fn pull(fail: &str) -> Option<(std::process::Output, String)> {
    let python = require_tool("python3", "the stand-in Ollama API")?;
    require_tool("curl", "the generated pull script")?;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pulls");
    let mut server = Command::new(python)
        .args(["-c", STANDIN, fail])
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let port = first_line_of(&mut server);
    // The models of the repository's spec, as its hub's module passes them.
    let appliance = agent_appliance::operator::commands::load(&root().join("appliance.toml")).unwrap();
    let models = &appliance.inference.as_ref().unwrap().models;
    let output = Command::new("sh")
        .arg(root().join("modules/pull-models.sh"))
        .arg(format!("http://127.0.0.1:{}", port.trim()))
        .args(models)
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    Some((output, std::fs::read_to_string(&log).unwrap_or_default()))
}

#[test]
fn every_model_is_pulled_and_a_failure_names_its_model() {
    let Some((ok, pulls)) = pull("none") else {
        return;
    };
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(
        pulls,
        "gemma4:26b-a4b-it-q8_0 False\nglm-4.7-flash:q4_K_M False\nqwen3.5:27b-q4_K_M False\n"
    );
    let Some((failed, pulls)) = pull("glm-4.7-flash:q4_K_M") else {
        return;
    };
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "a failed pull must fail the unit");
    assert_contains(
        &stderr,
        "appliance: model glm-4.7-flash:q4_K_M failed to pull: {\"error\": \"pull model manifest",
    );
    assert_contains(&stderr, "models not pulled: glm-4.7-flash:q4_K_M");
    // The others are still pulled.
    assert_eq!(pulls.lines().count(), 3);
}

/// A one-host spec with a Hermes agent that has the crawler tool; `extra`
/// is appended (`[inference]` keys first, then other tables).
fn spec(inference_extra: &str, extra: &str) -> String {
    format!(
        r#"[appliance]
name = "lab"

[hosts.box]
target = "nixos"
gpu = {{ vendor = "nvidia", model = "l4", count = 1 }}

[matrix]
host = "box"
server-name = "lab"
admins = ["ada"]

[inference]
host = "box"
models = ["qwen3.5:27b-q4_K_M", "glm-4.7-flash:q4_K_M"]
{inference_extra}

[agents.casper]
kind = "hermes"
host = "box"
tools = ["crawler"]

[rooms.lab]
members = ["casper", "@ada"]
{extra}
"#
    )
}

fn load(text: &str) -> agent_appliance::generator::model::Appliance {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("appliance.toml");
    std::fs::write(&path, text).unwrap();
    agent_appliance::operator::commands::load(&path).unwrap()
}

fn check(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("appliance.toml"), text).unwrap();
    crate::support::run_in(dir.path(), &["check"])
}

#[test]
fn ollama_searxng_and_webextract_are_sandboxes_by_default() {
    let appliance = load(&spec("", ""));
    let host = &appliance.hosts["box"];
    let names: Vec<&str> = host.sandboxes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ollama", "searxng", "webextract", "casper"]);
    let ollama = &host.sandboxes[0];
    assert_eq!(ollama.runtime, "runsc-gpu");
    assert_eq!(ollama.user, "11434:11434");
    assert!(ollama.cap_add.is_empty() && ollama.read_only_root && ollama.gpus);
    assert_eq!(ollama.volumes[0].name, "appliance-ollama-models");
    assert!(ollama.publish.is_empty(), "one host: nothing published");
    let searxng = &host.sandboxes[1];
    assert_eq!(searxng.runtime, "runsc", "the search backend is strict");
    assert!(!searxng.gpus && searxng.cap_add.is_empty() && searxng.read_only_root);
    let webextract = &host.sandboxes[2];
    assert_eq!(webextract.runtime, "runsc", "the extraction backend is strict");
    assert!(!webextract.gpus && webextract.cap_add.is_empty() && webextract.read_only_root);
    assert_eq!(webextract.user, "10090:10090", "not root");
    assert_eq!(webextract.network.as_ref().unwrap().address.to_string(), "10.88.0.4");
    assert_eq!(webextract.env_files, ["/var/lib/appliance/secrets/webextract/env"]);
    assert_eq!(webextract.environment["HTTPS_PROXY"], "http://10.88.0.1:3128");
    let casper = &appliance.agents["casper"];
    assert_eq!(casper.inference_url.as_deref(), Some("http://10.88.0.2:11434"));
    assert_eq!(casper.search_url.as_deref(), Some("http://10.88.0.3:8080"));
    assert_eq!(casper.extract_url.as_deref(), Some("http://10.88.0.4:8090"));
    assert!(
        casper.warnings.is_empty(),
        "no agent-web-off or agent-extract-off with both backends"
    );
    let own = &host.sandboxes[3];
    assert!(
        own.env_files
            .contains(&"/var/lib/appliance/secrets/webextract/env".to_string())
    );
    assert!(
        own.reach
            .iter()
            .any(|r| r.service == agent_appliance::generator::model::ReachService::Extract && r.port == 8090),
        "casper reaches webextract"
    );
    // Only casper: the service sandboxes do not reach each other.
    for service in &host.sandboxes[..3] {
        assert!(
            service
                .reach
                .iter()
                .all(|r| r.service != agent_appliance::generator::model::ReachService::Extract),
            "{}",
            service.name
        );
    }
    // No host service, and the firewall opens nothing for Ollama.
    assert!(host.firewall.iter().all(|r| r.port != 11434));
}

#[test]
fn extract_off_keeps_search_and_says_so() {
    let appliance = load(&spec("", "\n[crawler]\nextract = \"off\"\n"));
    let host = &appliance.hosts["box"];
    let names: Vec<&str> = host.sandboxes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ollama", "searxng", "casper"]);
    let casper = &appliance.agents["casper"];
    assert!(casper.search_url.is_some() && casper.extract_url.is_none());
    let codes: Vec<_> = casper.warnings.iter().map(|w| w.code).collect();
    assert_eq!(codes, ["agent-extract-off"]);
    assert_eq!(host.sandboxes[2].env_files.len(), 1, "no key file without the service");
}

#[test]
fn host_mode_and_crawler_off_keep_the_old_setup_and_say_so() {
    let appliance = load(&spec("sandbox = \"host\"", "\n[crawler]\nbackend = \"off\"\n"));
    let host = &appliance.hosts["box"];
    let names: Vec<&str> = host.sandboxes.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["casper"]);
    let inference = appliance.inference.as_ref().unwrap();
    assert!(inference.sandbox.is_none());
    assert_eq!(inference.bind_address.to_string(), "10.88.0.1");
    let codes: Vec<_> = inference.warnings.iter().map(|w| w.code).collect();
    assert!(codes.contains(&"inference-on-host"), "{codes:?}");
    let casper = &appliance.agents["casper"];
    assert!(casper.search_url.is_none());
    assert_eq!(casper.warnings[0].code, "agent-web-off");
}

#[test]
fn check_warns_when_the_models_do_not_fit_in_vram() {
    // 44 GB + 40 GB on one 24 GiB L4.
    let output = check(&spec("", ""));
    let stderr = crate::support::stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert_contains(
        &stderr,
        "warning[inference-vram]: inference: the models need about 84.0 GB loaded together, but 1 x l4 has 25.8 GB",
    );
    // A spec size counts instead of the table's; both fit on eight.
    let fits = check(&spec("sizes = { \"qwen3.5:27b-q4_K_M\" = \"20g\" }", "").replace("count = 1", "count = 8"));
    assert!(
        !crate::support::stderr(&fits).contains("inference-vram"),
        "{}",
        crate::support::stderr(&fits)
    );
    let bad = check(&spec("sizes = { \"nope:1b\" = \"20g\" }", ""));
    assert!(!bad.status.success());
    assert!(
        crate::support::stderr(&bad).contains("`sizes` names model `nope:1b`, which `models` does not list"),
        "{}",
        crate::support::stderr(&bad)
    );
}

#[test]
fn an_agent_cannot_take_a_service_sandboxs_name() {
    let text = spec("", "").replace("casper", "webextract");
    let output = check(&text);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_contains(
        &stderr,
        "container name `webextract` is the appliance's own service sandbox",
    );
}
