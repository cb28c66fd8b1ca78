//! The sandbox lab: a private dockerd with the default spec's generated
//! daemon settings adapted to this machine, the busybox probe image with
//! every image's accounts and writable directories, and host directories
//! with one secret and env file per agent. tests/sandbox.rs checks every
//! sandbox in it; `cargo bench --bench sandbox` times container starts in it.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use agent_appliance::generator::docker::run_options;
use agent_appliance::generator::model::image::{self, ImageLayout};
use agent_appliance::generator::model::services::EXTRACT_KEY_ENV;
use agent_appliance::generator::model::{Appliance, BindSource, Host, SECRETS_MOUNT, Sandbox};
use agent_appliance::generator::render::runtimes::daemon_settings;
use agent_appliance::generator::runsc::{FlagListing, RunscVersion, probe_binary};
use agent_appliance::generator::spec::schema::Platform;
use agent_appliance::operator::commands::load;
use serde_json::Value;

use super::dockerd::{DOCKER, Dockerd};
use super::{in_ci, require_tool, root};

/// The probe image's tag.
pub const IMAGE: &str = "appliance-test:busybox";

/// The generated daemon settings of `host`, adapted to this machine:
/// 1. flags spelled for the installed runsc (in CI bookworm-backports'
///    0.0~20240729, which still spells packet writes `TESTONLY-...`) through
///    the library's own table, chosen by what `runsc flags` lists;
/// 2. `platform = "ptrace"` only when that runsc has no systrap (bookworm's
///    own 2022 build); kvm hangs in this nested VM;
/// 3. `--network=none` appended to every runtime: runsc's netstack fails on
///    this VM with "cannot run with network enabled in root network
///    namespace".
///
/// Nothing else changes: runtime names, `path` ("runsc", found on PATH),
/// `default-runtime`, `no-new-privileges` and every other flag are as
/// generated.
pub fn machine_settings(host: &Host) -> Value {
    let mut host = host.clone();
    let (version, listing) = installed_runsc();
    if !listing.has_platform(host.platform) {
        host.platform = Platform::Ptrace;
    }
    let settings = daemon_settings(&host, version).expect("settings spell for the installed runsc");
    let mut settings = serde_json::to_value(settings).unwrap();
    for runtime in settings["runtimes"].as_object_mut().unwrap().values_mut() {
        let args = runtime["runtimeArgs"].as_array_mut().unwrap();
        // No GPU here: the GPU runtime runs minus nvproxy (issue 13).
        args.retain(|a| !a.as_str().unwrap_or_default().starts_with("--nvproxy"));
        args.push("--network=none".into());
    }
    settings
}

/// Host-side stand-ins for the appliance's runtime paths.
pub struct Paths {
    pub dir: tempfile::TempDir,
}

impl Paths {
    /// `/var/lib/appliance/...` and `/run/appliance/...` below a temp dir.
    pub fn host(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }
}

/// The generated `docker run` options of `sandbox`, adapted to this machine:
/// 1. `--network=none` instead of `--network=appliance --ip=... --dns=...`
///    and the ports published on the overlay: the test daemon has no bridge
///    (and old runsc no sandbox networking); and no
///    `--device=nvidia.com/gpu=all` and no nvproxy flags: no GPU here;
///    `--cpus` at most this machine's CPUs, which Docker insists on;
/// 2. host paths (secrets, socket dirs, env files) below a temp dir, and
///    generated files from the committed `generated/` tree;
/// 3. `extra`: probe-only options a check adds, never a generated one;
/// 4. (in the test) the owner and mode of the exec sandbox's socket, see there.
///
/// Image and command are replaced by the caller (the agent images are Nix
/// builds, not available here).
pub fn machine_args(sandbox: &Sandbox, paths: &Paths, extra: &[String]) -> Vec<String> {
    let mut args: Vec<String> = rerooted_run_args(sandbox, &root().join("generated"), |path| paths.host(path))
        .into_iter()
        .filter(|arg| {
            !["--network=", "--ip=", "--dns=", "--publish="]
                .iter()
                .any(|flag| arg.starts_with(flag))
        })
        .collect();
    args.push("--network=none".into());
    args.extend(extra.iter().cloned());
    args
}

/// The generated `docker run` options of `sandbox` (`docker::run_options`,
/// what the NixOS module passes on) with its paths re-rooted, generated
/// files from `generated` and host paths (binds, env files) through
/// `host_path`, and what no test machine has taken out: no
/// `--device=nvidia.com/gpu=...` (no GPU, and no CDI in dockerd 20.10) and
/// `--cpus` at most this machine's CPUs (Docker refuses more; Ollama's 8).
/// Everything else is as generated.
pub fn rerooted_run_args(sandbox: &Sandbox, generated: &Path, host_path: impl Fn(&str) -> PathBuf) -> Vec<String> {
    run_options(sandbox)
        .cli_args(|source| match source {
            BindSource::Generated(path) => generated.join(path).display().to_string(),
            BindSource::Host(path) => host_path(path).display().to_string(),
        })
        .into_iter()
        .filter(|arg| !arg.starts_with("--device=nvidia.com/gpu="))
        .map(|arg| match arg.strip_prefix("--env-file=") {
            Some(file) => format!("--env-file={}", host_path(file).display()),
            None => arg,
        })
        .map(
            |arg| match arg.strip_prefix("--cpus=").and_then(|n| n.parse::<f64>().ok()) {
                Some(cpus) => format!("--cpus={}", cpus.min(available_cpus())),
                None => arg,
            },
        )
        .collect()
}

pub fn available_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

pub fn uid_gid(sandbox: &Sandbox) -> (u32, u32) {
    let (uid, gid) = sandbox.user.split_once(':').expect("user is uid:gid");
    (uid.parse().unwrap(), gid.parse().unwrap())
}

/// The test's webextract key (the host makes a random one).
pub const EXTRACT_TEST_KEY: &str = "extract-key-of-the-sandbox-test";

pub fn secret_of(agent: &str) -> String {
    format!("secret-of-{agent}")
}

/// The test lab: dockerd with the adapted generated settings, the test
/// image, and host dirs with one secret and env file per agent.
pub struct Lab {
    // Field order is drop order: the daemon goes before the dirs.
    pub daemon: Dockerd,
    pub paths: Paths,
    pub appliance: Appliance,
    pub probe: PathBuf,
    pub servers: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

/// The installed runsc's spelling family and flag listing.
pub fn installed_runsc() -> (RunscVersion, FlagListing) {
    let runsc = require_tool("runsc", "sandbox policy under real gVisor").expect("runsc is installed");
    probe_binary(&runsc).expect("runsc answers `runsc flags`")
}

pub fn tools_present() -> bool {
    let why = "sandbox policy under real gVisor";
    let tools = ["runsc", "dockerd", "busybox", "gcc", "tar", "timeout"];
    let found = super::require_tools(&tools, why);
    let client = Path::new(DOCKER).is_file();
    assert!(
        client || !in_ci(),
        "`{DOCKER}` (Debian's docker.io client) is required in CI"
    );
    super::require_root("the gVisor tests start dockerd") && found && client
}

impl Lab {
    pub fn start(extra_runtimes: &[(&str, &[&str])]) -> Option<Lab> {
        if !tools_present() {
            return None;
        }
        let appliance = load(&root().join("appliance.toml")).unwrap();
        let mut settings = machine_settings(&appliance.hosts["hub"]);
        for (name, args) in extra_runtimes {
            settings["runtimes"][*name] = serde_json::json!({"path": "runsc", "runtimeArgs": args});
        }
        let daemon =
            Dockerd::start(&settings).unwrap_or_else(|log| panic!("dockerd rejected the generated settings:\n{log}"));
        let paths = Paths {
            dir: tempfile::Builder::new().prefix("appliance-lab-").tempdir().unwrap(),
        };
        let probe = build_image(&daemon, paths.dir.path(), &appliance.hosts["hub"]);
        let lab = Lab {
            daemon,
            paths,
            appliance,
            probe,
            servers: Vec::new(),
        };
        lab.write_host_files();
        Some(lab)
    }

    pub fn hub(&self) -> &Host {
        &self.appliance.hosts["hub"]
    }

    pub fn sandbox(&self, name: &str) -> &Sandbox {
        self.hub().sandboxes.iter().find(|s| s.name == name).unwrap()
    }

    /// Secrets (0400, owned by the sandbox's user, as the bootstrap leaves
    /// them) and socket dirs, where the generated options expect them.
    pub fn write_host_files(&self) {
        for sandbox in &self.hub().sandboxes {
            let (uid, gid) = uid_gid(sandbox);
            for bind in &sandbox.binds {
                let BindSource::Host(path) = &bind.source else { continue };
                let dir = self.paths.host(path);
                fs::create_dir_all(&dir).unwrap();
                if bind.target == SECRETS_MOUNT {
                    let token = dir.join("token");
                    fs::write(&token, secret_of(sandbox.agent.as_deref().unwrap_or_default())).unwrap();
                    for path in [&token, &dir] {
                        let mode = if path.is_dir() { 0o700 } else { 0o400 };
                        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
                        chown(path, Some(uid), Some(gid)).unwrap();
                    }
                } else if bind.read_only {
                    // A socket dir as the generated tmpfiles rule makes it:
                    // root and the consuming agent's group, SOCKET_DIR_MODE.
                    fs::set_permissions(
                        &dir,
                        fs::Permissions::from_mode(agent_appliance::generator::model::SOCKET_DIR_MODE),
                    )
                    .unwrap();
                    chown(&dir, Some(0), Some(gid)).unwrap();
                }
            }
            for file in &sandbox.env_files {
                let path = self.paths.host(file);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                // webextract's key file is shared by the service and its
                // crawler clients, root's as the host unit makes it.
                if file == EXTRACT_KEY_ENV {
                    fs::write(&path, format!("TAVILY_API_KEY={EXTRACT_TEST_KEY}\n")).unwrap();
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
                    continue;
                }
                fs::write(
                    &path,
                    format!(
                        "APPLIANCE_TEST_SECRET=env-{}\n",
                        secret_of(sandbox.agent.as_deref().unwrap_or_default())
                    ),
                )
                .unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
                chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
    }

    pub fn run(&self, args: &[String], script: &str) -> Output {
        self.daemon.run_rm(args, IMAGE, &["sh", "-c", script])
    }
}

/// The image description (src/generator/model/image.rs) a sandbox runs.
pub fn layout_of(sandbox: &Sandbox) -> &'static ImageLayout {
    image::by_reference(&sandbox.image).unwrap_or_else(|| panic!("{}: no image layout", sandbox.name))
}

/// Compiles tests/probes/probe.c and imports a busybox rootfs with it, plus
/// every image's accounts and writable directories with their owners and
/// modes, as the Nix images have them (src/generator/model/image.rs; Docker copies a
/// directory's owner and mode into a new named volume).
pub fn build_image(daemon: &Dockerd, scratch: &Path, host: &Host) -> PathBuf {
    let (probe, rootfs) = probe_rootfs(scratch);
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut layouts: Vec<&ImageLayout> = host.sandboxes.iter().map(layout_of).collect();
    layouts.sort_by_key(|l| l.name);
    layouts.dedup_by_key(|l| l.name);
    for layout in layouts {
        let account = layout.account;
        if account.uid != 0 {
            passwd.push_str(&format!(
                "{}:x:{}:{}::{}:/bin/sh\n",
                account.name, account.uid, account.gid, account.home
            ));
        }
        for writable in layout.writable {
            let dir = rootfs.join(writable.path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            let (uid, gid) = writable.owner_ids(&account);
            chown(&dir, Some(uid), Some(gid)).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(writable.mode)).unwrap();
        }
    }
    fs::write(rootfs.join("etc/passwd"), passwd).unwrap();
    daemon.import(&rootfs, IMAGE);
    probe
}

/// Compiles tests/probes/probe.c into `scratch/probe` and lays out a busybox
/// root filesystem with it in `scratch/rootfs` (every applet linked, a
/// world-writable /tmp): the base of the test images. Returns both paths.
pub fn probe_rootfs(scratch: &Path) -> (PathBuf, PathBuf) {
    let probe = scratch.join("probe");
    let gcc = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&probe)
        .arg(root().join("tests/probes/probe.c"))
        .output()
        .unwrap();
    super::assert_succeeded("gcc", &gcc);
    let rootfs = scratch.join("rootfs");
    for dir in [
        "bin", "etc", "tmp", "proc", "sys", "dev", "run", "var", "home", "opt", "root",
    ] {
        fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let busybox = require_tool("busybox", "the test image").unwrap();
    fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
    fs::copy(&probe, rootfs.join("bin/probe")).unwrap();
    let list = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            let _ = symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    (probe, rootfs)
}
