//! The generated model pull (generated/hosts/hub/pull-models.sh, what the
//! `appliance-models` unit runs) against a stand-in Ollama API on loopback:
//! a small Python server that answers `/api/version` and `/api/pull` the way
//! Ollama does (`{"status":"success"}`, or HTTP 500 with `{"error": ...}`).
//! It is a stand-in: no model is downloaded; the real pull is checked on a
//! GPU host (docs/sandboxes.md).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::{require_tool, root};

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
    let mut port = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let output = Command::new("sh")
        .arg(root().join("generated/hosts/hub/pull-models.sh"))
        .arg(format!("http://127.0.0.1:{}", port.trim()))
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
    assert!(
        stderr.contains("appliance: model glm-4.7-flash:q4_K_M failed to pull: {\"error\": \"pull model manifest"),
        "{stderr}"
    );
    assert!(stderr.contains("models not pulled: glm-4.7-flash:q4_K_M"), "{stderr}");
    // The others are still pulled.
    assert_eq!(pulls.lines().count(), 3);
}
