//! Hermes' `crawler` tool end to end, as far as this machine allows: in a
//! network namespace of the test's own, Hermes 0.19.0 (its own
//! `web_search` tool, with casper's generated `config.yaml`) asks the
//! search backend, which queries test pages served in the same namespace.
//!
//! Adaptations, all here:
//! - The backend is Debian's `searx` 1.1.0, SearXNG's predecessor with the
//!   same `/search?format=json` API, since nixpkgs' SearXNG cannot be built
//!   here and SearXNG is not on PyPI. It runs outside gVisor (the sandbox's
//!   options are proven in tests/sandbox.rs).
//! - Its settings are the generated `services/searxng/settings.yml` merged
//!   over searx's defaults by searx's own `update_settings` (what
//!   `use_default_settings` does), with loopback instead of the bridge
//!   address, a test secret (searx 1.1.0 has no `SEARXNG_SECRET`), and one
//!   `xpath` engine over the test pages in place of the public engines.
//! - Hermes gets `SEARXNG_URL` at that loopback address instead of the
//!   sandbox's bridge address in its generated environment.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{require_install, require_tool, root};

const PAGES: &str = r#"
import sys, html, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        port = self.server.server_address[1]
        if u.path == "/search":
            q = html.escape(urllib.parse.parse_qs(u.query).get("q", [""])[0])
            body = (f"<html><body><article><a href='http://127.0.0.1:{port}/gvisor.html'>"
                    f"Rehearsal page about {q}</a><p>gVisor is an application kernel.</p>"
                    "</article></body></html>")
        else:
            self.send_response(404); self.end_headers(); return
        data = body.encode()
        self.send_response(200); self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
s = HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Merges the generated settings over searx's defaults, as SearXNG's
/// `use_default_settings` does, and adapts them (see the module docs).
const MERGE: &str = r#"
import sys, yaml
from searx.settings_loader import update_settings
default = yaml.safe_load(open("/usr/share/doc/searx/examples/settings.yml"))
user = yaml.safe_load(open(sys.argv[1]))
assert user["use_default_settings"] is True
user["use_default_settings"] = {"engines": {"keep_only": []}}
# No egress proxy in the test's namespace; the engine reads a local page.
user.pop("outgoing")
user["server"].update(bind_address="127.0.0.1", port=int(sys.argv[3]), secret_key="rehearsal-only")
user["engines"] = [{
    "name": "rehearsal-pages", "engine": "xpath", "shortcut": "rp", "enable_http": True,
    "search_url": f"http://127.0.0.1:{sys.argv[4]}/search?q={{query}}",
    "url_xpath": "//article/a/@href", "title_xpath": "//article/a", "content_xpath": "//article/p",
}]
yaml.safe_dump(update_settings(default, user), open(sys.argv[2], "w"))
"#;

const SEARCH: &str = r#"
import json, sys
from tools.web_tools import web_search_tool
print(web_search_tool(sys.argv[1], limit=3))
"#;

/// A network namespace that is deleted, with everything in it, on drop.
struct Netns {
    name: String,
    children: Vec<Child>,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("appl-crawl-{}", std::process::id());
        let ok = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
        ok(&["netns", "add", &name]);
        ok(&["-n", &name, "link", "set", "lo", "up"]);
        Netns {
            name,
            children: Vec::new(),
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(netns: &Netns, url: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let probe = netns
            .command(Path::new("curl"))
            .args(["-fsS", "-o", "/dev/null", url])
            .status()
            .unwrap();
        if probe.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    false
}

#[test]
fn hermes_web_search_answers_from_a_test_page_through_the_search_backend() {
    let Some(hermes) = require_install(
        "HERMES_VENV",
        ".ci/hermes-venv",
        "bin/python",
        "Hermes' web_search tool",
    ) else {
        return;
    };
    // Debian's own Python: searx's Flask and Babel are Debian packages.
    let Some(python) = require_tool("python3", "the test pages") else {
        return;
    };
    if require_tool("curl", "probing the backend").is_none() {
        return;
    }
    let debian_python = Path::new("/usr/bin/python3");
    let searx_app = Path::new("/usr/lib/python3/dist-packages/searx/webapp.py");
    if !searx_app.is_file() {
        assert!(
            !crate::common::in_ci(),
            "Debian's `searx` is required in CI (.ci/install.sh)"
        );
        eprintln!("\n!!! SKIPPED: Debian's `searx` is not installed; CI=true makes this a failure !!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut netns = Netns::new();

    let mut pages = netns
        .command(&python)
        .args(["-c", PAGES])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pages_port = String::new();
    BufReader::new(pages.stdout.take().unwrap())
        .read_line(&mut pages_port)
        .unwrap();
    netns.children.push(pages);

    let search_port = free_port().to_string();
    let settings = dir.path().join("settings.yml");
    let merged = Command::new(debian_python)
        .args(["-c", MERGE])
        .arg(root().join("generated/services/searxng/settings.yml"))
        .arg(&settings)
        .args([&search_port, pages_port.trim()])
        // searx loads settings when imported; its example file will do.
        .env("SEARX_SETTINGS_PATH", "/usr/share/doc/searx/examples/settings.yml")
        .output()
        .unwrap();
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    let log = fs::File::create(dir.path().join("searx.log")).unwrap();
    let searx = netns
        .command(debian_python)
        .arg(searx_app)
        .env("SEARX_SETTINGS_PATH", &settings)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    netns.children.push(searx);
    let backend = format!("http://127.0.0.1:{search_port}");
    assert!(
        wait_for(&netns, &format!("{backend}/search?q=x&format=json")),
        "searx did not answer: {}",
        fs::read_to_string(dir.path().join("searx.log")).unwrap_or_default()
    );

    // Hermes with casper's generated config (web.search_backend, toolsets).
    let home = dir.path().join("hermes");
    fs::create_dir_all(&home).unwrap();
    fs::copy(
        root().join("generated/agents/casper/config.yaml"),
        home.join("config.yaml"),
    )
    .unwrap();
    let output = netns
        .command(&hermes.join("bin/python"))
        .args(["-c", SEARCH, "gvisor"])
        .env("HERMES_HOME", &home)
        .env("SEARXNG_URL", &backend)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(result["success"], true, "{result}");
    let first = &result["data"]["web"][0];
    assert_eq!(first["title"], "Rehearsal page about gvisor", "{result}");
    assert_eq!(
        first["url"],
        format!("http://127.0.0.1:{}/gvisor.html", pages_port.trim()),
        "{result}"
    );
    assert_eq!(first["description"], "gVisor is an application kernel.", "{result}");
}
