//! A network namespace a test makes for itself, for both test binaries:
//! what the test serves (the rehearsal's hub, the egress proxy's world, the
//! crawler's services) lives inside it, so no address is added to the
//! machine's own namespace and no packet leaves it. Deleted on drop.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("failed to run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Netns {
    /// `ip netns add NAME`, loopback up, and `links` (name, address/prefix):
    /// the hub's WireGuard address, where Ollama and Synapse listen for other
    /// hosts. Each is one end of a veth pair whose peer stays in the same
    /// namespace (this kernel has no `dummy` module).
    pub fn create(name: &str, links: &[(&str, String)]) -> Netns {
        remove_stale(name);
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
        ip(&["netns", "add", name]);
        let netns = Netns { name: name.to_string() };
        ip(&["-n", name, "link", "set", "lo", "up"]);
        for (index, (interface, address)) in links.iter().enumerate() {
            let peer = format!("peer{index}");
            ip(&[
                "-n", name, "link", "add", interface, "type", "veth", "peer", "name", &peer,
            ]);
            ip(&["-n", name, "addr", "add", address, "dev", interface]);
            ip(&["-n", name, "link", "set", interface, "up"]);
            ip(&["-n", name, "link", "set", &peer, "up"]);
        }
        netns
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A veth pair from here (`uplink`, address `here`, e.g.
    /// "198.51.100.1/30") to `other` (`downlink`, address `there`), both
    /// ends up. Routes are the caller's.
    pub fn link_to(&self, other: &Netns, here: &str, there: &str) {
        self.ip(&[
            "link",
            "add",
            "uplink",
            "type",
            "veth",
            "peer",
            "name",
            "downlink",
            "netns",
            &other.name,
        ]);
        self.ip(&["addr", "add", here, "dev", "uplink"]);
        self.ip(&["link", "set", "uplink", "up"]);
        other.ip(&["addr", "add", there, "dev", "downlink"]);
        other.ip(&["link", "set", "downlink", "up"]);
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// A command run inside the namespace. `nsenter --net`, not `ip netns
    /// exec`: the latter remounts /sys, and dockerd then fails with
    /// "Devices cgroup isn't mounted".
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        command
    }

    /// `program args` in the namespace, in the background, its output in
    /// `log`; killed when the returned value is dropped (before the
    /// namespace, if declared after it).
    pub fn spawn(&self, program: &str, args: &[&str], log: &Path) -> Background {
        let log = File::create(log).unwrap();
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Background(child)
    }

    /// Runs `f` on a thread that moved into the namespace (setns is per
    /// thread), so the test's own HTTP clients reach what listens inside.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

/// Namespaces `<prefix>-<pid>` that an earlier run left when it was killed
/// (its Drop never ran): their process is gone.
fn remove_stale(name: &str) {
    let Some((prefix, _)) = name.rsplit_once('-') else {
        return;
    };
    for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&format!("{prefix}-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "delete", &file]).output();
        }
    }
}

/// A process a test started; killed and reaped on drop.
pub struct Background(pub Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).output();
    }
}
