//! The rehearsal's images: the Nix images cannot be built on this machine
//! (no nixpkgs), so each is rebuilt here from the same upstream programs on
//! a debootstrap rootfs (`scripts/rehearsal-rootfs.sh`, cached), with the
//! user, writable directories, environment and entry point taken from the
//! image description in the library, the one the Nix images are rendered
//! from. Then `docker import` of the rootfs and a `docker build` that adds
//! only a layer of files (passwd, group, directories) and the metadata: no
//! build step runs a container.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::dockerd::Dockerd;
use crate::support::root;
use agent_appliance::generator::model::CODE_RUNNER_IMAGE;
use agent_appliance::generator::model::image::{self, ImageLayout};

/// What the rehearsal builds: one image of the library's description, or
/// the code-runner image (a Nix package, not an `ImageLayout`: it runs inside
/// the inner dockerd, under its defaults).
pub struct ImageSpec {
    pub tag: String,
    /// Which rootfs of scripts/rehearsal-rootfs.sh carries its programs.
    pub flavor: String,
    pub layout: Option<&'static ImageLayout>,
}

/// The rootfs flavor carrying the programs of an image's `packages`, each
/// the Debian package (or npm/PyPI release) of the Nix package named there.
fn flavor(layout: &ImageLayout) -> &'static str {
    match layout.name {
        "openclaw" => "openclaw",
        "hermes" => "hermes",
        "docker-in-gvisor" => "dind",
        "ollama" | "ollama-cuda" => "ollama",
        "searxng" => "searxng",
        "webextract" => "webextract",
        "picoclaw" => "picoclaw",
        other => panic!("no rehearsal rootfs for image `{other}`"),
    }
}

pub fn image_specs() -> Vec<ImageSpec> {
    let mut specs: Vec<ImageSpec> = image::all()
        .into_iter()
        .map(|layout| ImageSpec {
            tag: layout.reference(),
            flavor: flavor(layout).into(),
            layout: Some(layout),
        })
        .collect();
    specs.push(ImageSpec {
        tag: CODE_RUNNER_IMAGE.into(),
        flavor: "code-runner".into(),
        layout: None,
    });
    specs
}

/// Where built root filesystems are kept between runs:
/// `$APPLIANCE_REHEARSAL_CACHE`, else /var/cache/appliance-rehearsal.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("APPLIANCE_REHEARSAL_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/appliance-rehearsal"), PathBuf::from)
}

/// The cached rootfs tarball of a flavor, built on first use.
fn rootfs(flavor: &str) -> PathBuf {
    let output = Command::new("bash")
        .arg(root().join("scripts/rehearsal-rootfs.sh"))
        .arg(flavor)
        .arg(cache_dir())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("failed to run scripts/rehearsal-rootfs.sh");
    assert!(
        output.status.success(),
        "scripts/rehearsal-rootfs.sh {flavor} failed (its output is above)"
    );
    PathBuf::from(
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or_default(),
    )
}

fn docker_ok(daemon: &Dockerd, args: &[&str]) -> String {
    let output = daemon.docker(args);
    assert!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `/etc/passwd` or `/etc/group` of the rootfs tarball.
fn file_in_tar(tar: &Path, path: &str) -> String {
    let output = Command::new("tar")
        .arg("-xOf")
        .arg(tar)
        .arg(format!("./{path}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{path} is missing in {}", tar.display());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Entry-point scripts of the flake's overlay that the Nix image builds
/// from a script file: (the file, where the image has the command).
fn overlay_script(package: &str) -> Option<(&'static str, &'static str)> {
    match package {
        "appliance-hermes-start" => Some(("nix/packages/hermes-start.sh", "/usr/local/bin/appliance-hermes-start")),
        "appliance-openclaw-start" => Some((
            "nix/packages/openclaw-start.sh",
            "/usr/local/bin/appliance-openclaw-start",
        )),
        _ => None,
    }
}

/// The layer the description adds: the account's passwd and group entries
/// and every writable directory with its owner and mode (Docker copies a
/// directory's owner into a new named volume mounted there).
fn write_layer(spec: &ImageSpec, base: &Path, layer: &Path, extra: &[(PathBuf, &str)]) {
    fs::create_dir_all(layer.join("etc")).unwrap();
    if let Some(layout) = spec.layout {
        let account = &layout.account;
        let mut passwd = file_in_tar(base, "etc/passwd");
        let mut group = file_in_tar(base, "etc/group");
        if !passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(&account.uid.to_string()))
        {
            passwd.push_str(&format!(
                "{}:x:{}:{}::{}:/bin/sh\n",
                account.name, account.uid, account.gid, account.home
            ));
            group.push_str(&format!("{}:x:{}:\n", account.name, account.gid));
        }
        fs::write(layer.join("etc/passwd"), passwd).unwrap();
        fs::write(layer.join("etc/group"), group).unwrap();
        for package in layout.packages {
            if let Some((script, target)) = overlay_script(package) {
                let path = layer.join(target.trim_start_matches('/'));
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                let body = fs::read_to_string(root().join(script)).unwrap();
                // What writeShellApplication makes of the same script.
                fs::write(
                    &path,
                    format!("#!/bin/bash\nset -o errexit -o nounset -o pipefail\n{body}"),
                )
                .unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        for dir in layout.writable {
            let path = layer.join(dir.path.trim_start_matches('/'));
            fs::create_dir_all(&path).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(dir.mode)).unwrap();
            let (uid, gid) = dir.owner_ids(account);
            chown(&path, Some(uid), Some(gid)).unwrap();
        }
    } else {
        // The code-runner's WorkingDir.
        fs::create_dir_all(layer.join("workspace")).unwrap();
    }
    // Nix's cacert puts the bundle where the description's SSL_CERT_FILE
    // points; Debian's ca-certificates names it differently.
    let certs = layer.join("etc/ssl/certs");
    fs::create_dir_all(&certs).unwrap();
    std::os::unix::fs::symlink("ca-certificates.crt", certs.join("ca-bundle.crt")).unwrap();
    for (source, target) in extra {
        let path = layer.join(target.trim_start_matches('/'));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A file in place of the bundle's link, not written through it.
        if path.is_symlink() {
            fs::remove_file(&path).unwrap();
        }
        fs::copy(source, &path).unwrap();
    }
}

/// Metadata as the Nix image has it (generated/images/*.nix): `Env`,
/// `User`, `Entrypoint`; the code-runner's as nix/packages/code-runner.nix.
fn dockerfile(base_tag: &str, spec: &ImageSpec) -> String {
    let mut text = format!("FROM {base_tag}\nADD layer.tar /\n");
    let Some(layout) = spec.layout else {
        text.push_str("ENV SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt\nWORKDIR /workspace\nCMD [\"bash\"]\n");
        return text;
    };
    for entry in layout.env {
        let (key, value) = entry.split_once('=').expect("env entries are KEY=value");
        text.push_str(&format!("ENV {key}={}\n", serde_json::to_string(value).unwrap()));
    }
    text.push_str(&format!("USER {}\n", layout.account.user()));
    text.push_str(&format!(
        "ENTRYPOINT {}\n",
        serde_json::to_string(&layout.entrypoint).unwrap()
    ));
    text
}

/// Builds one image into `daemon` under its appliance tag.
fn build(daemon: &Dockerd, spec: &ImageSpec, scratch: &Path, extra: &[(PathBuf, &str)]) {
    let started = std::time::Instant::now();
    let base = rootfs(&spec.flavor);
    let base_tag = format!("appliance-rehearsal/rootfs-{}:latest", spec.flavor);
    let import = daemon
        .command()
        .args(["import", "-"])
        .arg(&base_tag)
        .stdin(fs::File::open(&base).unwrap())
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "docker import {}: {}",
        base.display(),
        String::from_utf8_lossy(&import.stderr)
    );
    let context = scratch.join(format!("image-{}", spec.flavor));
    let layer = context.join("layer");
    write_layer(spec, &base, &layer, extra);
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&layer)
        .args(["--numeric-owner", "-cf"])
        .arg(context.join("layer.tar"))
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success(), "tar of the image layer failed");
    fs::write(context.join("Dockerfile"), dockerfile(&base_tag, spec)).unwrap();
    let context_arg = context.display().to_string();
    let mut build = daemon.command();
    build
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", &spec.tag, &context_arg]);
    let output = build.output().unwrap();
    assert!(
        output.status.success(),
        "docker build {}: {}",
        spec.tag,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "rehearsal: image {} ready in {:.1} s",
        spec.tag,
        started.elapsed().as_secs_f64()
    );
}

/// Builds every image the hub's sandboxes run, plus the code-runner image
/// that the code sandbox loads into its inner dockerd.
pub fn build_all(daemon: &Dockerd, scratch: &Path, wanted: &[String], services: &ServiceFiles) {
    let specs = image_specs();
    let code_runner = specs
        .iter()
        .find(|s| s.flavor == "code-runner")
        .expect("a code-runner image description");
    build(daemon, code_runner, scratch, &[]);
    let saved = scratch.join("code-runner.tar");
    docker_ok(daemon, &["save", "-o", &saved.display().to_string(), &code_runner.tag]);
    for spec in specs.iter().filter(|s| wanted.contains(&s.tag)) {
        let extra: Vec<(PathBuf, &str)> = match spec.flavor.as_str() {
            "dind" => vec![(saved.clone(), "/opt/appliance/code-runner.tar")],
            "ollama" => services.ollama(scratch),
            "searxng" => services.searxng(scratch),
            "webextract" => services.webextract(scratch),
            "picoclaw" => services.picoclaw(),
            _ => Vec::new(),
        };
        build(daemon, spec, scratch, &extra);
    }
}

/// PicoClaw as .ci/gobuild.sh built it from its Go module (the version and
/// build tags nix/sources.json pins for nixpkgs' package), where the Nix
/// image has `picoclaw` on PATH.
fn picoclaw_binary() -> Vec<(PathBuf, &'static str)> {
    let built =
        std::env::var_os("APPLIANCE_PICOCLAW").map_or_else(|| root().join(".ci/go/bin/picoclaw"), PathBuf::from);
    assert!(
        built.is_file(),
        "no PicoClaw build at `{}`\nhint: run `.ci/gobuild.sh`",
        built.display()
    );
    vec![(built, "/usr/local/bin/picoclaw")]
}

/// What the rehearsal lays into the service images in place of the Nix
/// packages it cannot build: the stand-in model server behind an `ollama`
/// command, Debian's searx behind a `searxng-run` command, and the real
/// webextract service on PyPI's trafilatura behind `appliance-webextract`.
pub struct ServiceFiles<'a> {
    /// tests/rehearsal/standin_model.py.
    pub standin: &'a Path,
    /// The spec's models, which the stand-in serves.
    pub models: Vec<String>,
    /// The Matrix server name, for the user IDs the stand-in's loop
    /// replies mention.
    pub server_name: String,
    /// `host:port` of the test web host, which the rehearsal's search
    /// engine reads.
    pub web: String,
    /// The test CA of the stand-in GitHub API (PEM).
    pub github_ca: PathBuf,
}

fn executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

impl ServiceFiles<'_> {
    /// PicoClaw's image: the Go build, and the stand-in GitHub API's test
    /// CA as the image's CA bundle (`SSL_CERT_FILE`, which the generated
    /// environment names: the rehearsal's stand-in for the public CAs of
    /// the hosts on "the internet"), in this image only: the other
    /// sandboxes do not trust it. With a credential the sandbox also
    /// trusts the appliance CA (`SSL_CERT_DIR`), which replaces the
    /// directories `gh`, a Go program, would otherwise scan.
    fn picoclaw(&self) -> Vec<(PathBuf, &'static str)> {
        let mut files = picoclaw_binary();
        files.push((self.github_ca.clone(), "/etc/ssl/certs/ca-bundle.crt"));
        files
    }

    /// `ollama serve` as the image's entry point runs it: the stand-in on
    /// `OLLAMA_HOST` (from the generated environment), logging its requests
    /// into the model volume.
    fn ollama(&self, scratch: &Path) -> Vec<(PathBuf, &'static str)> {
        let wrapper = scratch.join("ollama-standin");
        let mut models: Vec<String> = self.models.iter().map(|m| format!("--model={m}")).collect();
        models.push(format!("--server-name={}", self.server_name));
        executable(
            &wrapper,
            &format!(
                r#"#!/bin/sh
# STAND-IN for Ollama in the rehearsal: there is no Ollama binary here.
# `ollama serve` runs the stand-in model server where OLLAMA_HOST says.
[ "$1" = serve ] || {{ echo 'stand-in ollama: only serve' >&2; exit 2; }}
hostport=${{OLLAMA_HOST:-0.0.0.0:11434}}
exec python3 /opt/standin/standin_model.py --listen="${{hostport%:*}}" --port="${{hostport##*:}}" \
  --log=/var/lib/ollama/standin-requests.jsonl {}
"#,
                models.join(" ")
            ),
        );
        vec![
            (self.standin.to_path_buf(), "/opt/standin/standin_model.py"),
            (wrapper, "/usr/local/bin/ollama"),
        ]
    }

    /// `searxng-run` as the image's entry point runs it: the generated
    /// settings (`SEARXNG_SETTINGS_PATH`) merged over searx's defaults by
    /// searx's own `update_settings` (SearXNG's `use_default_settings`),
    /// the secret from `SEARXNG_SECRET`, and one engine over the test web
    /// host instead of the public engines; then searx's web app.
    fn searxng(&self, scratch: &Path) -> Vec<(PathBuf, &'static str)> {
        let wrapper = scratch.join("searxng-run");
        executable(
            &wrapper,
            &format!(
                r#"#!/usr/bin/python3
# REHEARSAL: Debian's searx in place of nixpkgs' SearXNG (see docs/rehearsal.md).
import os, sys, yaml
os.environ.setdefault("SEARX_SETTINGS_PATH", "/usr/share/doc/searx/examples/settings.yml")
from searx.settings_loader import update_settings
default = yaml.safe_load(open("/usr/share/doc/searx/examples/settings.yml"))
user = yaml.safe_load(open(os.environ["SEARXNG_SETTINGS_PATH"]))
assert user.pop("use_default_settings") is True
user["use_default_settings"] = {{"engines": {{"keep_only": []}}}}
user["server"]["secret_key"] = os.environ["SEARXNG_SECRET"]
user["engines"] = [{{
    "name": "rehearsal-web", "engine": "xpath", "shortcut": "rw", "enable_http": True,
    "search_url": "http://{web}/search.html?q={{query}}",
    "url_xpath": "//article/a/@href", "title_xpath": "//article/a", "content_xpath": "//article/p",
}}]
merged = "/tmp/searx-settings.yml"
yaml.safe_dump(update_settings(default, user), open(merged, "w"))
os.environ["SEARX_SETTINGS_PATH"] = merged
os.execv("/usr/bin/python3", ["python3", "/usr/lib/python3/dist-packages/searx/webapp.py"])
"#,
                web = self.web
            ),
        );
        vec![(wrapper, "/usr/local/bin/searxng-run")]
    }

    /// `appliance-webextract` as the image's entry point runs it: the
    /// repository's nix/packages/webextract.py, unchanged, on the rootfs'
    /// venv (trafilatura from PyPI in place of nixpkgs').
    fn webextract(&self, scratch: &Path) -> Vec<(PathBuf, &'static str)> {
        let wrapper = scratch.join("appliance-webextract");
        executable(
            &wrapper,
            "#!/bin/sh\n# REHEARSAL: the service on PyPI's trafilatura (see docs/rehearsal.md).\nexec /opt/webextract/bin/python /opt/webextract/webextract.py \"$@\"\n",
        );
        vec![
            (
                root().join("nix/packages/webextract.py"),
                "/opt/webextract/webextract.py",
            ),
            (wrapper, "/usr/local/bin/appliance-webextract"),
        ]
    }
}
