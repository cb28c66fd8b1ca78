//! The sandboxes' state, read from Docker through its own CLI (a maintained
//! client; the warden carries no Docker API code). The containers are the
//! NixOS `oci-containers` ones (`docker-<name>.service`), named after the
//! agents. `DOCKER_HOST` is passed through, so a test can point the warden
//! at its own daemon.
//!
//! Events are folded into one episode per container per poll, so a
//! container in a crash loop gives one notice with counts, not a flood.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::on_host::audit;

/// A hung daemon must not hang the warden's Matrix work.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(30);

/// The container events the warden reports. Not `restart`: `docker
/// restart` also emits `die` and `start`, which already count it, and a
/// restart policy's restart emits only those two.
const ACTIONS: [&str; 3] = ["die", "oom", "start"];

pub struct Docker {
    pub program: String,
}

/// One container event, as `docker events --format '{{json .}}'` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub action: String,
    /// `die` only: the main process's exit code.
    pub exit_code: Option<i64>,
    pub time_ns: u64,
}

/// What one container went through in one poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Episode {
    pub name: String,
    pub dies: u32,
    pub ooms: u32,
    pub starts: u32,
    pub last_exit: Option<i64>,
    pub first_ns: u64,
    pub last_ns: u64,
    /// The last event was a start: it is (as far as the events say) up.
    pub up: bool,
}

/// One container's state, from `docker inspect` (and `docker stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    pub name: String,
    pub running: bool,
    /// Docker's word: `running`, `exited`, `restarting`, ...
    pub status: String,
    pub restarts: u64,
    pub started_at: String,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub memory: Option<String>,
}

impl Docker {
    /// Runs the docker CLI; its stdout, or an error with its stderr.
    fn run(&self, args: &[String]) -> Result<String> {
        run_program(&self.program, args, DOCKER_TIMEOUT)
    }

    /// `docker stop NAME` or `docker start NAME`.
    pub fn container(&self, verb: &str, name: &str) -> Result<()> {
        self.run(&[verb.to_string(), name.to_string()]).map(|_| ())
    }

    /// Where the named volume's files are on this host.
    pub fn volume_mountpoint(&self, name: &str) -> Result<std::path::PathBuf> {
        let out = self.run(&[
            "volume".into(),
            "inspect".into(),
            "--format".into(),
            "{{.Mountpoint}}".into(),
            name.into(),
        ])?;
        Ok(std::path::PathBuf::from(out.trim()))
    }

    /// The events of the containers `names` from `since_ns` to `until_ns`,
    /// both inclusive (Docker's rule), oldest first. Docker keeps only its
    /// last 256 events in memory, so a longer outage can lose some.
    pub fn events(&self, names: &[String], since_ns: u64, until_ns: u64) -> Result<Vec<Event>> {
        // No `container=` filter would mean every container of the host.
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut args: Vec<String> = [
            "events",
            "--since",
            &timestamp(since_ns),
            "--until",
            &timestamp(until_ns),
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--format", "{{json .}}", "--filter", "type=container"].map(String::from));
        for action in ACTIONS {
            args.extend(["--filter".to_string(), format!("event={action}")]);
        }
        for name in names {
            args.extend(["--filter".to_string(), format!("container={name}")]);
        }
        let out = self.run(&args)?;
        Ok(out.lines().filter_map(parse_event).collect())
    }

    /// The state of those of `names` that exist, with memory for the
    /// running ones when `docker stats` answers.
    pub fn sandboxes(&self, names: &[String]) -> Result<BTreeMap<String, Sandbox>> {
        let existing = self.existing(names)?;
        if existing.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut args = vec!["inspect".to_string(), "--type".into(), "container".into()];
        args.extend(existing.iter().cloned());
        let inspected: Value = serde_json::from_str(&self.run(&args)?).context("`docker inspect` answered no JSON")?;
        let mut found: BTreeMap<String, Sandbox> = inspected
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(parse_inspect)
            .map(|s| (s.name.clone(), s))
            .collect();
        let running: Vec<String> = found.values().filter(|s| s.running).map(|s| s.name.clone()).collect();
        // Memory is a nice-to-have: a failing `docker stats` leaves it out.
        for (name, memory) in self.memory(&running).unwrap_or_default() {
            if let Some(sandbox) = found.get_mut(&name) {
                sandbox.memory = Some(memory);
            }
        }
        Ok(found)
    }

    /// Docker's one-word state (`running`, `exited`, `restarting`, ...) of
    /// those of `names` that exist: one cheap call, made at every poll.
    pub fn states(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        let out = self.run(&["ps", "-a", "--format", "{{.Names}}\t{{.State}}"].map(String::from))?;
        Ok(out
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .filter(|(name, _)| names.iter().any(|n| n == name))
            .map(|(name, state)| (name.to_string(), state.trim().to_string()))
            .collect())
    }

    /// Which of `names` are containers (`docker inspect` of a missing one
    /// fails the whole call).
    fn existing(&self, names: &[String]) -> Result<Vec<String>> {
        let out = self.run(&["ps", "-a", "--format", "{{.Names}}"].map(String::from))?;
        Ok(names
            .iter()
            .filter(|n| out.lines().any(|line| line.trim() == n.as_str()))
            .cloned()
            .collect())
    }

    fn memory(&self, names: &[String]) -> Result<BTreeMap<String, String>> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut args = ["stats", "--no-stream", "--format", "{{json .}}"]
            .map(String::from)
            .to_vec();
        args.extend(names.iter().cloned());
        let out = self.run(&args)?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let stats: Value = serde_json::from_str(line).ok()?;
                Some((
                    stats["Name"].as_str()?.to_string(),
                    stats["MemUsage"].as_str()?.to_string(),
                ))
            })
            .collect())
    }
}

/// Docker's `seconds.nanoseconds` form of a time.
fn timestamp(ns: u64) -> String {
    format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One line of `docker events --format '{{json .}}'`; none for anything
/// that is not a container event with a name.
pub fn parse_event(line: &str) -> Option<Event> {
    let event: Value = serde_json::from_str(line).ok()?;
    if event["Type"] != "container" {
        return None;
    }
    let attributes = &event["Actor"]["Attributes"];
    Some(Event {
        name: attributes["name"].as_str()?.to_string(),
        action: event["Action"].as_str()?.to_string(),
        exit_code: attributes["exitCode"].as_str().and_then(|c| c.parse().ok()),
        time_ns: event["timeNano"].as_u64()?,
    })
}

/// One element of `docker inspect`'s array.
fn parse_inspect(container: &Value) -> Option<Sandbox> {
    let state = &container["State"];
    Some(Sandbox {
        name: container["Name"].as_str()?.trim_start_matches('/').to_string(),
        running: state["Running"].as_bool()?,
        status: state["Status"].as_str().unwrap_or("unknown").to_string(),
        restarts: container["RestartCount"].as_u64().unwrap_or(0),
        started_at: state["StartedAt"].as_str().unwrap_or_default().to_string(),
        exit_code: state["ExitCode"].as_i64().unwrap_or(0),
        oom_killed: state["OOMKilled"].as_bool().unwrap_or(false),
        memory: None,
    })
}

/// Events (oldest first) -> one episode per container, by name.
pub fn fold(events: &[Event]) -> Vec<Episode> {
    let mut episodes: BTreeMap<&str, Episode> = BTreeMap::new();
    for event in events {
        let episode = episodes.entry(&event.name).or_insert_with(|| Episode {
            name: event.name.clone(),
            first_ns: event.time_ns,
            ..Episode::default()
        });
        episode.last_ns = event.time_ns;
        match event.action.as_str() {
            "die" => {
                episode.dies += 1;
                episode.last_exit = event.exit_code.or(episode.last_exit);
                episode.up = false;
            }
            "oom" => episode.ooms += 1,
            "start" => {
                episode.starts += 1;
                episode.up = true;
            }
            _ => {}
        }
    }
    episodes.into_values().collect()
}

impl Episode {
    /// The audit kind: the worst thing that happened.
    pub fn kind(&self) -> &'static str {
        if self.ooms > 0 {
            "sandbox.oom"
        } else if self.dies > 0 {
            "sandbox.exit"
        } else {
            "sandbox.start"
        }
    }

    /// The ops room's notice (and the audit detail).
    pub fn text(&self) -> String {
        let mut what = Vec::new();
        if self.dies > 0 {
            let exit = self
                .last_exit
                .map_or(String::new(), |c| format!(", last exit code {c}"));
            what.push(format!("died {}{exit}", times(self.dies)));
        }
        if self.ooms > 0 {
            what.push(format!("ran out of memory {}", times(self.ooms)));
        }
        if self.starts > 0 {
            what.push(format!("started {}", times(self.starts)));
        }
        let when = if self.first_ns / 1_000_000_000 == self.last_ns / 1_000_000_000 {
            format!("at {}", audit::rfc3339(self.first_ns / 1_000_000_000))
        } else {
            format!(
                "between {} and {}",
                audit::rfc3339(self.first_ns / 1_000_000_000),
                audit::rfc3339(self.last_ns / 1_000_000_000)
            )
        };
        let now = if self.up { "up" } else { "down" };
        format!("sandbox {}: {} {when}; now {now}", self.name, what.join(", "))
    }
}

fn times(n: u32) -> String {
    if n == 1 {
        "once".to_string()
    } else {
        format!("{n} times")
    }
}

/// `!status`'s line for a sandbox; none: no such container on this host.
pub fn status_line(name: &str, sandbox: Option<&Sandbox>) -> String {
    let Some(s) = sandbox else {
        return format!("sandbox {name}: no container on this host");
    };
    let state = if s.running {
        format!("up since {}", s.started_at)
    } else {
        let oom = if s.oom_killed { ", OOM-killed" } else { "" };
        format!("down ({}, exit code {}{oom})", s.status, s.exit_code)
    };
    let memory = s.memory.as_deref().map_or(String::new(), |m| format!("; memory {m}"));
    format!("sandbox {name}: {state}; {} restart(s){memory}", s.restarts)
}

/// Runs `program` with `args`; its stdout, or an error with its stderr.
/// Killed when it does not finish within `timeout`: the warden must not
/// hang on a tool that hangs.
pub fn run_program(program: &str, args: &[String], timeout: Duration) -> Result<String> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{program}`"))?;
    let pid = rustix::process::Pid::from_child(&child);
    let (tx, rx) = mpsc::channel();
    // `wait_with_output` drains stdout and stderr together (no pipe
    // can fill up and stall the other); the timeout is kept here.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(output) = rx.recv_timeout(timeout) else {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        bail!("`{program} {}` did not answer within {timeout:?}", args.join(" "));
    };
    let output = output.with_context(|| format!("failed to wait for `{program}`"))?;
    let (status, out, err) = (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr),
    );
    if !status.success() {
        bail!("`{program} {}` failed ({status}): {}", args.join(" "), err.trim());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, action: &str, exit: Option<i64>, second: u64) -> Event {
        Event {
            name: name.into(),
            action: action.into(),
            exit_code: exit,
            time_ns: second * 1_000_000_000,
        }
    }

    #[test]
    fn a_crash_loop_is_one_episode_with_counts() {
        let mut events = Vec::new();
        for i in 0..5 {
            events.push(event("casper", "die", Some(1), 100 + 2 * i));
            events.push(event("casper", "start", None, 101 + 2 * i));
        }
        let episodes = fold(&events);
        assert_eq!(episodes.len(), 1);
        let e = &episodes[0];
        assert_eq!((e.dies, e.starts, e.ooms, e.up), (5, 5, 0, true));
        assert_eq!(e.kind(), "sandbox.exit");
        assert_eq!(
            e.text(),
            "sandbox casper: died 5 times, last exit code 1, started 5 times between 1970-01-01T00:01:40Z and 1970-01-01T00:01:49Z; now up"
        );
    }

    #[test]
    fn each_container_gets_its_own_episode_and_the_worst_kind() {
        let events = [
            event("melchior", "start", None, 10),
            event("casper", "oom", None, 11),
            event("casper", "die", Some(137), 11),
        ];
        let episodes = fold(&events);
        let kinds: Vec<(&str, &str)> = episodes.iter().map(|e| (e.name.as_str(), e.kind())).collect();
        assert_eq!(kinds, [("casper", "sandbox.oom"), ("melchior", "sandbox.start")]);
        assert_eq!(
            episodes[0].text(),
            "sandbox casper: died once, last exit code 137, ran out of memory once at 1970-01-01T00:00:11Z; now down"
        );
        assert!(fold(&[]).is_empty());
    }

    #[test]
    fn docker_event_lines_parse() {
        let line = r#"{"status":"die","id":"abc","from":"img","Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"137","image":"img","name":"casper"}},"scope":"local","time":1700000000,"timeNano":1700000000123456789}"#;
        assert_eq!(
            parse_event(line),
            Some(Event {
                name: "casper".into(),
                action: "die".into(),
                exit_code: Some(137),
                time_ns: 1_700_000_000_123_456_789,
            })
        );
        assert_eq!(parse_event(r#"{"Type":"network","Action":"connect"}"#), None);
        assert_eq!(parse_event("not json"), None);
        assert_eq!(timestamp(1_700_000_000_000_000_001), "1700000000.000000001");
    }

    #[test]
    fn status_lines_say_up_or_down() {
        let up = Sandbox {
            name: "casper".into(),
            running: true,
            status: "running".into(),
            restarts: 2,
            started_at: "2026-12-05T07:00:00Z".into(),
            memory: Some("1.2MiB / 3.8GiB".into()),
            ..Sandbox::default()
        };
        assert_eq!(
            status_line("casper", Some(&up)),
            "sandbox casper: up since 2026-12-05T07:00:00Z; 2 restart(s); memory 1.2MiB / 3.8GiB"
        );
        let down = Sandbox {
            running: false,
            status: "exited".into(),
            exit_code: 137,
            oom_killed: true,
            memory: None,
            ..up
        };
        assert_eq!(
            status_line("casper", Some(&down)),
            "sandbox casper: down (exited, exit code 137, OOM-killed); 2 restart(s)"
        );
        assert_eq!(status_line("x", None), "sandbox x: no container on this host");
    }

    #[test]
    fn a_missing_or_failing_docker_is_an_error_not_a_panic() {
        let names = ["casper".to_string()];
        let missing = Docker {
            program: "/nonexistent/docker".into(),
        };
        let error = format!("{:#}", missing.events(&names, 1, 2).unwrap_err());
        assert!(error.starts_with("cannot run `/nonexistent/docker`"), "{error}");
        let failing = Docker {
            program: "false".into(),
        };
        let error = format!("{:#}", failing.sandboxes(&names).unwrap_err());
        assert!(error.contains("failed (exit status: 1)"), "{error}");
        // No names, no query: no filter would mean every container.
        assert_eq!(missing.events(&[], 1, 2).unwrap(), Vec::new());
    }
}
