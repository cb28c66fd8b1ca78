//! Hermes' `crawler` tool end to end, as far as this machine allows: in a
//! network namespace of the test's own, Hermes 0.19.0 (its own
//! `web_search` and `web_extract` tools, with casper's generated
//! `config.yaml`) asks the search and extraction backends, which read test
//! pages served in the same namespace.
//!
//! Adaptations for `web_extract`, all here:
//! - The service is the real nix/packages/webextract.py, run by a venv with
//!   trafilatura from PyPI (.ci/install.sh) instead of the Nix image, outside
//!   gVisor, on loopback instead of the bridge address, with a key of the
//!   test's own instead of the host's key file.
//! - No egress proxy in the namespace: the service fetches the page
//!   directly (the proxy's refusals are tests/egress.rs').
//! - The page sits at a globally routable address on the namespace's
//!   loopback (`PUBLIC_PAGE_ADDRESS`), since Hermes refuses private targets
//!   before it asks any backend; nothing is routed out of the namespace.
//!
//! Adaptations for `web_search`, all here:
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
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::netns::{Background, Netns};
use crate::support::ports::free_port;
use crate::support::{first_line_of, require_install, require_tool, root};

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

/// A test's network namespace and the processes it started in it, which
/// are killed before the namespace goes (fields drop in order).
struct Namespace {
    children: Vec<Background>,
    netns: Netns,
}

impl Namespace {
    fn create(name: &str) -> Namespace {
        let netns = Netns::create(&format!("{name}-{}", std::process::id()), &[]);
        Namespace {
            children: Vec::new(),
            netns,
        }
    }

    /// Starts `script` with `args` in the namespace and reads the port it
    /// prints first.
    fn spawn_printing_port(&mut self, python: &Path, script: &str, args: &[&str]) -> String {
        let mut child = self
            .netns
            .command(python)
            .args(["-c", script])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let port = first_line_of(&mut child);
        self.children.push(Background(child));
        port.trim().to_string()
    }

    /// `command` started in the background with its output in `log`, once
    /// `path` of 127.0.0.1:`port` answers inside the namespace (the test
    /// fails with the log otherwise); that address's base URL.
    fn start_answering(&mut self, mut command: std::process::Command, log: &Path, port: &str, path: &str) -> String {
        let file = fs::File::create(log).unwrap();
        let child = command.stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
        self.children.push(Background(child));
        let backend = format!("http://127.0.0.1:{port}");
        let url = format!("{backend}{path}");
        assert!(
            wait_for(&self.netns, &url),
            "{url} did not answer: {}",
            fs::read_to_string(log).unwrap_or_default()
        );
        backend
    }
}

/// Hermes' venv (`$HERMES_VENV`, else `.ci/hermes-venv`), whose tool `why`
/// the test runs; a loud skip without it (a failure in CI).
fn hermes_venv(why: &str) -> Option<PathBuf> {
    require_install("HERMES_VENV", ".ci/hermes-venv", "bin/python", why)
}

/// A Hermes home under `dir` with casper's generated config.yaml.
fn casper_hermes_home(dir: &Path) -> PathBuf {
    let home = dir.join("hermes");
    fs::create_dir_all(&home).unwrap();
    fs::copy(
        root().join("generated/agents/casper/config.yaml"),
        home.join("config.yaml"),
    )
    .unwrap();
    home
}

/// The JSON a Hermes tool script printed; the test fails unless it exited 0.
fn json_result(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn hermes_web_search_answers_from_a_test_page_through_the_search_backend() {
    let Some(hermes) = hermes_venv("Hermes' web_search tool") else {
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
            !crate::support::in_ci(),
            "Debian's `searx` is required in CI (.ci/install.sh)"
        );
        eprintln!("\n!!! SKIPPED: Debian's `searx` is not installed; CI=true makes this a failure !!!\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ns = Namespace::create("appl-crawl-s");
    let pages_port = ns.spawn_printing_port(&python, PAGES, &[]);

    let search_port = free_port().to_string();
    let settings = dir.path().join("settings.yml");
    let merged = Command::new(debian_python)
        .args(["-c", MERGE])
        .arg(root().join("generated/services/searxng/settings.yml"))
        .arg(&settings)
        .args([&search_port, &pages_port])
        // searx loads settings when imported; its example file will do.
        .env("SEARX_SETTINGS_PATH", "/usr/share/doc/searx/examples/settings.yml")
        .output()
        .unwrap();
    assert!(merged.status.success(), "{}", String::from_utf8_lossy(&merged.stderr));
    let mut searx = ns.netns.command(debian_python);
    searx.arg(searx_app).env("SEARX_SETTINGS_PATH", &settings);
    let backend = ns.start_answering(
        searx,
        &dir.path().join("searx.log"),
        &search_port,
        "/search?q=x&format=json",
    );

    // Hermes with casper's generated config (web.search_backend, toolsets).
    let home = casper_hermes_home(dir.path());
    let output = ns
        .netns
        .command(hermes.join("bin/python"))
        .args(["-c", SEARCH, "gvisor"])
        .env("HERMES_HOME", &home)
        .env("SEARXNG_URL", &backend)
        .output()
        .unwrap();
    let result = json_result(&output);
    assert_eq!(result["success"], true, "{result}");
    let first = &result["data"]["web"][0];
    assert_eq!(first["title"], "Rehearsal page about gvisor", "{result}");
    assert_eq!(
        first["url"],
        format!("http://127.0.0.1:{pages_port}/gvisor.html"),
        "{result}"
    );
    assert_eq!(first["description"], "gVisor is an application kernel.", "{result}");
}

/// A globally routable address for the extraction test's web page, held by
/// the test's own namespace (no route leaves it): Hermes' `web_extract`
/// refuses private, loopback and reserved targets before it asks any
/// backend. 192.88.99.0/24 is the deprecated 6to4 relay anycast prefix
/// (RFC 7526), which no one serves web pages from.
const PUBLIC_PAGE_ADDRESS: &str = "192.88.99.80";

/// The extraction test's web page: an article between navigation and a
/// footer, which the service must leave out.
const ARTICLE: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
PAGE = b"""<html><head><title>gVisor - rehearsal page</title></head><body>
<nav><a href="/">Home</a> | <a href="/about">About</a> | Navigation menu</nav>
<article><h1>About gVisor</h1>
<p>gVisor is an application kernel that implements a substantial part of the Linux system call interface in user space.</p>
<p>It runs containers with their own kernel, so a compromised workload does not reach the host kernel directly.</p>
</article>
<footer>Copyright footer text</footer></body></html>"""
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path != "/gvisor.html":
            self.send_response(404); self.end_headers(); return
        self.send_response(200); self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE))); self.end_headers(); self.wfile.write(PAGE)
s = HTTPServer((sys.argv[1], 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Hermes' own `web_extract` tool, as the gateway would call it; and which
/// tools Hermes' registry offers with this config and environment.
const EXTRACT: &str = r#"
import asyncio, json, sys
from tools.web_tools import web_extract_tool, check_web_api_key
assert check_web_api_key(), "Hermes sees no usable web backend"
print(asyncio.run(web_extract_tool([sys.argv[1]])))
"#;

#[test]
fn hermes_web_extract_reads_a_test_page_through_the_extraction_service() {
    let Some(hermes) = hermes_venv("Hermes' web_extract tool") else {
        return;
    };
    let Some(service_venv) = require_install(
        "WEBEXTRACT_VENV",
        ".ci/webextract-venv",
        "bin/python",
        "trafilatura for appliance-webextract (.ci/install.sh)",
    ) else {
        return;
    };
    let Some(python) = require_tool("python3", "the test page") else {
        return;
    };
    if require_tool("curl", "probing the service").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ns = Namespace::create("appl-crawl-x");
    ns.netns
        .ip(&["addr", "add", &format!("{PUBLIC_PAGE_ADDRESS}/32"), "dev", "lo"]);
    let page_port = ns.spawn_printing_port(&python, ARTICLE, &[PUBLIC_PAGE_ADDRESS]);
    let page = format!("http://{PUBLIC_PAGE_ADDRESS}:{page_port}/gvisor.html");

    // The service as the image runs it, on loopback instead of the bridge
    // address, with a key of the test's own; no egress proxy in this
    // namespace, so it fetches the page directly.
    let key = format!("test-key-{}-{}", std::process::id(), free_port());
    let service_port = free_port().to_string();
    let mut service = ns.netns.command(service_venv.join("bin/python"));
    service
        .arg(root().join("nix/packages/webextract.py"))
        .env("TAVILY_API_KEY", &key)
        .env("WEBEXTRACT_ADDRESS", "127.0.0.1")
        .env("WEBEXTRACT_PORT", &service_port)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    let backend = ns.start_answering(service, &dir.path().join("webextract.log"), &service_port, "/");

    // Hermes with casper's generated config (web.extract_backend, the `web`
    // toolset) and the variables its sandbox gets: TAVILY_BASE_URL (here the
    // loopback address) and TAVILY_API_KEY (here from the test, on the
    // appliance from the host's key file).
    let home = casper_hermes_home(dir.path());
    let run_hermes = |key: &str| {
        ns.netns
            .command(hermes.join("bin/python"))
            .args(["-c", EXTRACT, &page])
            .env("HERMES_HOME", &home)
            .env("TAVILY_BASE_URL", &backend)
            .env("TAVILY_API_KEY", key)
            .output()
            .unwrap()
    };
    let output = run_hermes(&key);
    let result = json_result(&output);
    let first = &result["results"][0];
    assert_eq!(first["error"], serde_json::Value::Null, "{result}");
    assert_eq!(first["url"], page.as_str(), "{result}");
    assert_eq!(first["title"], "About gVisor", "{result}");
    let content = first["content"].as_str().unwrap_or_default();
    assert!(
        content.contains("implements a substantial part of the Linux system call interface")
            && content.contains("a compromised workload does not reach the host kernel"),
        "{result}"
    );
    assert!(
        !content.contains("Navigation menu") && !content.contains("Copyright footer"),
        "the page's navigation and footer are not its text: {result}"
    );

    // A wrong key gets nothing from the service.
    let output = run_hermes("wrong-key-of-the-same-length-0000");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let error = result["results"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("401"), "a wrong key must be refused: {result}");
    eprintln!("crawler: Hermes' web_extract read {page} through appliance-webextract: {content:?}");
}
