//! A real Synapse for tests: from a venv (`APPLIANCE_SYNAPSE_VENV`, default
//! `.ci/venv`, made by `.ci/run`), SQLite, loopback, with the homeserver
//! settings our generator writes for the default spec. Stopped with SIGTERM
//! (then SIGKILL) when dropped.

#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use agent_appliance::bootstrap::client::Client;
use agent_appliance::model::STATE_DIR;
use serde_json::{Value, json};

use crate::common::{in_ci, root};

/// The venv holding `matrix-synapse`; `None` (after a loud skip message)
/// when it is missing outside CI. In CI a missing Synapse fails the test.
pub fn venv() -> Option<PathBuf> {
    let venv = std::env::var_os("APPLIANCE_SYNAPSE_VENV").map_or_else(|| root().join(".ci/venv"), PathBuf::from);
    let python = venv.join("bin/python");
    let installed = python.is_file()
        && fs::read_dir(venv.join("lib")).is_ok_and(|dirs| {
            dirs.flatten()
                .any(|d| d.path().join("site-packages/synapse/app/homeserver.py").is_file())
        });
    if !installed {
        assert!(
            !in_ci(),
            "Synapse is required in CI but `{}` has no matrix-synapse\nhint: `.ci/run` creates it; or set APPLIANCE_SYNAPSE_VENV",
            venv.display()
        );
        eprintln!(
            "\n!!! SKIPPED: no matrix-synapse in `{}` (run `python3 -m venv .ci/venv && .ci/venv/bin/pip install matrix-synapse==1.163.2`, or set APPLIANCE_SYNAPSE_VENV); CI=true makes this a failure !!!\n",
            venv.display()
        );
        return None;
    }
    Some(venv)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The generated settings for the default spec, with only what a test
/// must change: data paths under `data`, secret paths under `state_dir`
/// instead of /var/lib/appliance, and one loopback listener on `port`.
/// Rate limits are Synapse's defaults, as on the appliance.
pub fn settings(data: &Path, state_dir: &Path, port: u16) -> Value {
    let appliance = agent_appliance::commands::load(&root().join("appliance.toml")).expect("default spec loads");
    let mut settings = agent_appliance::render::synapse::settings(&appliance);
    let listener = &mut settings["listeners"][0];
    listener["port"] = json!(port);
    listener["bind_addresses"] = json!(["127.0.0.1"]);
    settings["public_baseurl"] = json!(format!("http://127.0.0.1:{port}/"));
    settings["database"]["args"]["database"] = json!(data.join("homeserver.db"));
    settings["media_store_path"] = json!(data.join("media"));
    settings["signing_key_path"] = json!(data.join("signing.key"));
    settings["pid_file"] = json!(data.join("homeserver.pid"));
    for key in [
        "registration_shared_secret_path",
        "macaroon_secret_key_path",
        "form_secret_path",
    ] {
        let path = settings[key].as_str().unwrap().to_string();
        let relative = path.strip_prefix(STATE_DIR).unwrap().trim_start_matches('/');
        settings[key] = json!(state_dir.join(relative));
    }
    settings
}

pub struct Synapse {
    child: Option<Child>,
    pub url: String,
    pub log: PathBuf,
}

impl Synapse {
    /// Starts Synapse (without waiting for it): its data and log go to
    /// `data`, its secrets are read from `state_dir`, which bootstrap's
    /// `--secrets-only` must have filled.
    pub fn start(venv: &Path, data: &Path, state_dir: &Path, port: u16) -> Synapse {
        Synapse::start_with(venv, data, state_dir, port, &[], &["127.0.0.1"])
    }

    /// As `start`, with the command run through `wrap` (e.g. `ip netns
    /// exec NAME`) and listening on `bind` (loopback first: `url` is there).
    pub fn start_with(venv: &Path, data: &Path, state_dir: &Path, port: u16, wrap: &[&str], bind: &[&str]) -> Synapse {
        fs::create_dir_all(data).unwrap();
        let config = data.join("homeserver.yaml");
        let mut settings = settings(data, state_dir, port);
        settings["listeners"][0]["bind_addresses"] = json!(bind);
        // JSON is YAML.
        fs::write(&config, serde_json::to_string_pretty(&settings).unwrap()).unwrap();
        let log = data.join("synapse.log");
        let out = fs::File::create(&log).unwrap();
        let python = venv.join("bin/python");
        let mut command = match wrap.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&python);
                command
            }
            None => Command::new(&python),
        };
        let child = command
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .current_dir(data)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("failed to start synapse");
        Synapse {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Waits until `/versions` answers; panics with the log's tail if
    /// Synapse exits or takes longer than a minute.
    pub fn wait_ready(&mut self) {
        let started = Instant::now();
        let client = Client::new(
            &self.url,
            Instant::now() + Duration::from_secs(5),
            Duration::from_secs(5),
        );
        loop {
            if let Ok(reply) = client.get("/_matrix/client/versions", None)
                && reply.ok()
            {
                eprintln!(
                    "synapse at {} ready after {:.1} s",
                    self.url,
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("synapse exited with {status}:\n{}", self.log_tail());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "synapse not ready after 60 s:\n{}",
                self.log_tail()
            );
            sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
