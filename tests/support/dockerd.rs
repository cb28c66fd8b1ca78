//! A private Docker daemon for tests: its own data root, exec root, socket,
//! pidfile and config file under one temporary directory, networking off, and
//! everything it started killed and unmounted on drop.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// Debian's 20.10 client, matching the daemon (`/usr/local/bin/docker` may
/// be a newer client on these machines).
pub const DOCKER: &str = "/usr/bin/docker";

/// The tests run containers with `--network none` only; without these
/// flags dockerd 20.10 creates docker0, iptables rules and turns on IP
/// forwarding on the host.
const NO_NETWORKING: &[&str] = &[
    "--bridge=none",
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--ip-masq=false",
    "--userland-proxy=false",
];

/// A private dockerd in a network namespace of its own (`unshare --net`,
/// no networking at all) with a busybox image `image`, for tests that only
/// need containers and volumes; `tools` are what else the test needs. A
/// missing tool or not being root skips the test loudly (fails it in CI).
pub fn private_busybox(why: &str, tools: &[&str], image: &str) -> Option<Dockerd> {
    let mut all = vec!["dockerd", "busybox", "unshare", "tar", "timeout"];
    all.extend_from_slice(tools);
    if !super::require_tools(&all, why) {
        return None;
    }
    assert!(
        Path::new(DOCKER).is_file() || !super::in_ci(),
        "`{DOCKER}` is required in CI"
    );
    if !super::require_root(&format!("{why}: it starts a dockerd")) {
        return None;
    }
    let wrapper = ["unshare", "--net", "--"].map(String::from);
    let daemon = Dockerd::start_with(&serde_json::json!({}), &wrapper)
        .unwrap_or_else(|log| panic!("dockerd did not start:\n{log}"));
    let rootfs = tempfile::tempdir().unwrap();
    fs::create_dir(rootfs.path().join("bin")).unwrap();
    fs::copy(
        super::require_tool("busybox", why).unwrap(),
        rootfs.path().join("bin/busybox"),
    )
    .unwrap();
    daemon.import(rootfs.path(), image);
    Some(daemon)
}

pub struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    pub socket: PathBuf,
}

impl Dockerd {
    /// Starts dockerd with `settings` as its config file. An `Err` carries
    /// dockerd's complaint when it rejects the settings.
    pub fn start(settings: &serde_json::Value) -> Result<Dockerd, String> {
        Dockerd::start_with(settings, &[])
    }

    /// Like `start`, with dockerd run through `wrapper` (e.g. `nsenter
    /// --net=/run/netns/NAME --`, to give it a network namespace of its own).
    pub fn start_with(settings: &serde_json::Value, wrapper: &[String]) -> Result<Dockerd, String> {
        let dir = tempfile::Builder::new().prefix("appliance-dockerd-").tempdir().unwrap();
        let root = dir.path();
        let config = root.join("daemon.json");
        fs::write(&config, serde_json::to_string_pretty(settings).unwrap()).unwrap();
        let socket = root.join("docker.sock");
        let log = fs::File::create(root.join("dockerd.log")).unwrap();
        let (program, wrapper_args) = match wrapper.split_first() {
            Some((program, rest)) => (program.as_str(), rest),
            None => ("dockerd", &[][..]),
        };
        let mut command = Command::new(program);
        if !wrapper.is_empty() {
            command.args(wrapper_args).arg("dockerd");
        }
        let child = command
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args(NO_NETWORKING)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        let mut daemon = Dockerd { dir, child, socket };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(format!("dockerd exited ({status}):\n{}", daemon.log()));
            }
            if daemon.socket.exists() && daemon.docker(&["version"]).status.success() {
                return Ok(daemon);
            }
            if Instant::now() > deadline {
                return Err(format!("dockerd did not answer within 60 s:\n{}", daemon.log()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// A docker client command for this daemon, killed after two minutes.
    pub fn command(&self) -> Command {
        let mut command = Command::new("timeout");
        command
            .args(["-s", "KILL", "120", DOCKER])
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()));
        command
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("failed to run docker")
    }

    /// `docker run -d --name NAME --network none ARGS...`: a sandbox's
    /// container, with no network, left running; panics unless it started.
    pub fn start_offline(&self, name: &str, args: &[&str]) {
        let output = self
            .command()
            .args(["run", "-d", "--name", name, "--network", "none"])
            .args(args)
            .output()
            .expect("failed to run docker");
        super::assert_succeeded(&format!("docker run {name}"), &output);
    }

    /// `docker run --rm ARGS IMAGE COMMAND...`, run to its end.
    pub fn run_rm(&self, args: &[String], image: &str, command: &[&str]) -> Output {
        self.command()
            .args(["run", "--rm"])
            .args(args)
            .arg(image)
            .args(command)
            .output()
            .expect("failed to run docker")
    }

    /// Imports a directory as an image, like `tar -C dir -c . | docker import - tag`.
    pub fn import(&self, rootfs: &Path, tag: &str) {
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let output = self
            .command()
            .args(["import", "-", tag])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of {} failed", rootfs.display());
        super::assert_succeeded("docker import", &output);
    }

    /// Every process whose command line names our directory: the managed
    /// containerd, shims, runsc sandboxes and gofers, all started by us.
    fn our_processes(&self) -> Vec<i32> {
        let needle = self.dir.path().display().to_string();
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            if let Ok(cmdline) = fs::read(entry.path().join("cmdline"))
                && String::from_utf8_lossy(&cmdline).contains(&needle)
            {
                pids.push(pid);
            }
        }
        pids
    }
}

fn signal(pid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = kill_process(pid, signal);
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, while the daemon can still stop them.
        let ids = self.docker(&["ps", "-aq"]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.docker(&args);
        }
        // dockerd stops its managed containerd on SIGTERM.
        let _ = kill_process(Pid::from_child(&self.child), Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Sandboxes runsc still knows (dockerd keeps every runtime's state
        // under `runtime-runc/moby` of its exec root).
        let exec = self.dir.path().join("exec");
        for state in fs::read_dir(&exec).into_iter().flatten().flatten() {
            let root = state.path().join("moby");
            if !state.file_name().to_string_lossy().starts_with("runtime-") || !root.is_dir() {
                continue;
            }
            let list = Command::new("runsc")
                .arg("--root")
                .arg(&root)
                .args(["list", "-quiet"])
                .output();
            for id in list
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
                .split_whitespace()
            {
                let _ = Command::new("runsc")
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "-force", id])
                    .output();
            }
        }
        // Anything left that we started: TERM, then KILL.
        for sig in [Signal::TERM, Signal::KILL] {
            let pids = self.our_processes();
            if pids.is_empty() {
                break;
            }
            for pid in &pids {
                signal(*pid, sig);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Overlay, shm and bundle mounts below our directory, deepest first.
        let prefix = format!("{}/", self.dir.path().display());
        for _ in 0..3 {
            let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let mut mounts: Vec<&str> = mountinfo
                .lines()
                .filter_map(|line| line.split(' ').nth(4))
                .filter(|point| point.starts_with(&prefix))
                .collect();
            if mounts.is_empty() {
                break;
            }
            mounts.sort_unstable_by(|a, b| b.cmp(a));
            for point in mounts {
                let status = Command::new("umount").arg(point).stderr(Stdio::null()).status();
                if !status.is_ok_and(|s| s.success()) {
                    let _ = Command::new("umount")
                        .arg("-l")
                        .arg(point)
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        // The TempDir removes the rest.
    }
}
