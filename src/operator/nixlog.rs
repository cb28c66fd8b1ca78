//! Nix's `--log-format internal-json` as progress: a pure fold over the
//! `@nix {...}` lines `nix build` writes to stderr.
//!
//! Nix reports activities (`start`/`stop`, each with an id and a type),
//! results on them (progress counters, build log lines, phases, expected
//! sizes) and free-standing messages. The numbers are Nix's own
//! `ActivityType` and `ResultType` values (`src/libutil/logging.hh`), the
//! same from Nix 2.4 to today; `nix build`'s own progress bar reads the
//! same messages.

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

/// How many build log lines are kept per derivation, for the failure report.
pub const LOG_TAIL_LINES: usize = 25;

/// Nix's `ActivityType`s that progress depends on.
mod activity {
    pub const FILE_TRANSFER: u64 = 101;
    pub const COPY_PATHS: u64 = 103;
    pub const BUILDS: u64 = 104;
    pub const BUILD: u64 = 105;
    pub const SUBSTITUTE: u64 = 108;
}

/// Nix's `ResultType`s that progress depends on.
mod result {
    pub const BUILD_LOG_LINE: u64 = 101;
    pub const SET_PHASE: u64 = 104;
    pub const PROGRESS: u64 = 105;
    pub const SET_EXPECTED: u64 = 106;
    pub const POST_BUILD_LOG_LINE: u64 = 107;
}

/// Nix's `lvlError` and `lvlWarn`.
const LEVEL_ERROR: u64 = 0;
const LEVEL_WARN: u64 = 1;

/// One line of Nix's stderr.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Start {
        id: u64,
        kind: u64,
        text: String,
        fields: Vec<Value>,
    },
    Stop {
        id: u64,
    },
    Result {
        id: u64,
        kind: u64,
        fields: Vec<Value>,
    },
    Msg {
        level: u64,
        text: String,
    },
    /// Anything that is not an `@nix` message (Nix prints some plain lines).
    Plain(String),
}

/// Parses one stderr line; `@nix` lines that are not valid JSON are kept
/// as plain text rather than dropped.
pub fn parse_line(line: &str) -> Line {
    let Some(json) = line.strip_prefix("@nix ") else {
        return Line::Plain(line.to_string());
    };
    let Ok(value) = serde_json::from_str::<Value>(json) else {
        return Line::Plain(line.to_string());
    };
    let number = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
    let fields = || {
        value
            .get("fields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match value.get("action").and_then(Value::as_str) {
        Some("start") => Line::Start {
            id: number("id"),
            kind: number("type"),
            text: strip_ansi(value.get("text").and_then(Value::as_str).unwrap_or("")),
            fields: fields(),
        },
        Some("stop") => Line::Stop { id: number("id") },
        Some("result") => Line::Result {
            id: number("id"),
            kind: number("type"),
            fields: fields(),
        },
        Some("msg") => Line::Msg {
            level: number("level"),
            text: strip_ansi(value.get("msg").and_then(Value::as_str).unwrap_or("")),
        },
        _ => Line::Plain(line.to_string()),
    }
}

/// Removes terminal colour sequences (`ESC [ ... m`) Nix puts in messages.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `done`, `expected`, `running`, `failed` of one activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub done: u64,
    pub expected: u64,
    pub running: u64,
    pub failed: u64,
}

#[derive(Debug, Clone)]
struct Activity {
    kind: u64,
    /// What a person reads: `building hello-2.12`, `fetching hello-2.12`.
    label: String,
    /// The derivation a build activity builds.
    drv: Option<String>,
    progress: Counter,
    running: bool,
}

/// Something worth a line of its own when stderr is not a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A build, substitution or download began.
    Started(String),
    /// A build entered a phase (`buildPhase`, ...).
    Phase { name: String, phase: String },
    /// A line of a derivation's build log.
    Log { name: String, line: String },
    /// A warning or error from Nix itself.
    Message { error: bool, text: String },
}

/// Everything the progress display shows, folded from Nix's messages.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    activities: BTreeMap<u64, Activity>,
    /// Start order of activities, newest last: the current step is the
    /// newest one still running.
    order: Vec<u64>,
    /// `setExpected` totals per activity type (bytes for downloads).
    expected: BTreeMap<u64, u64>,
    /// The last lines of each derivation's build log, by `.drv` path.
    logs: BTreeMap<String, VecDeque<String>>,
    phases: BTreeMap<String, String>,
    /// Nix's error messages, in order.
    pub errors: Vec<String>,
    /// Lines printed to stderr that were not `@nix` messages.
    pub plain: Vec<String>,
}

impl Progress {
    /// Folds a whole log: the same state a live run ends with.
    pub fn from_log(text: &str) -> Progress {
        let mut progress = Progress::default();
        for line in text.lines() {
            progress.apply(&parse_line(line));
        }
        progress
    }

    /// Takes in one line; returns what plain output would print for it.
    pub fn apply(&mut self, line: &Line) -> Option<Event> {
        match line {
            Line::Start { id, kind, text, fields } => self.start(*id, *kind, text, fields),
            Line::Stop { id } => {
                if let Some(activity) = self.activities.get_mut(id) {
                    activity.running = false;
                }
                None
            }
            Line::Result { id, kind, fields } => self.result(*id, *kind, fields),
            Line::Msg { level, text } => self.message(*level, text),
            Line::Plain(text) => {
                self.plain.push(text.clone());
                None
            }
        }
    }

    fn start(&mut self, id: u64, kind: u64, text: &str, fields: &[Value]) -> Option<Event> {
        let first = fields.first().and_then(Value::as_str);
        let (label, drv) = match kind {
            activity::BUILD => {
                let drv = first.unwrap_or_default().to_string();
                (format!("building {}", store_name(&drv)), Some(drv))
            }
            activity::SUBSTITUTE => (format!("fetching {}", store_name(first.unwrap_or_default())), None),
            _ => (text.to_string(), None),
        };
        // Downloads are not announced: Nix starts one per binary-cache query.
        let announce = matches!(kind, activity::BUILD | activity::SUBSTITUTE);
        self.activities.insert(
            id,
            Activity {
                kind,
                label: label.clone(),
                drv,
                progress: Counter::default(),
                running: true,
            },
        );
        self.order.push(id);
        announce.then_some(Event::Started(label))
    }

    fn result(&mut self, id: u64, kind: u64, fields: &[Value]) -> Option<Event> {
        let number = |i: usize| fields.get(i).and_then(Value::as_u64).unwrap_or(0);
        match kind {
            result::PROGRESS => {
                if let Some(activity) = self.activities.get_mut(&id) {
                    activity.progress = Counter {
                        done: number(0),
                        expected: number(1),
                        running: number(2),
                        failed: number(3),
                    };
                }
                None
            }
            result::SET_EXPECTED => {
                self.expected.insert(number(0), number(1));
                None
            }
            result::BUILD_LOG_LINE | result::POST_BUILD_LOG_LINE => {
                let line = strip_ansi(fields.first().and_then(Value::as_str).unwrap_or(""));
                let drv = self.activities.get(&id)?.drv.clone()?;
                let tail = self.logs.entry(drv.clone()).or_default();
                if tail.len() == LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                Some(Event::Log {
                    name: store_name(&drv),
                    line,
                })
            }
            result::SET_PHASE => {
                let phase = fields.first().and_then(Value::as_str)?.to_string();
                let drv = self.activities.get(&id)?.drv.clone()?;
                self.phases.insert(drv.clone(), phase.clone());
                Some(Event::Phase {
                    name: store_name(&drv),
                    phase,
                })
            }
            _ => None,
        }
    }

    fn message(&mut self, level: u64, text: &str) -> Option<Event> {
        let text = text.trim_end().to_string();
        if level == LEVEL_ERROR {
            self.errors.push(text.clone());
        }
        (level <= LEVEL_WARN).then_some(Event::Message {
            error: level == LEVEL_ERROR,
            text,
        })
    }

    /// Sum of one activity type's counters, as Nix's own bar adds them up.
    fn total(&self, kind: u64) -> Counter {
        let mut total = self
            .activities
            .values()
            .filter(|a| a.kind == kind)
            .fold(Counter::default(), |sum, a| Counter {
                done: sum.done + a.progress.done,
                expected: sum.expected + a.progress.expected,
                running: sum.running + a.progress.running,
                failed: sum.failed + a.progress.failed,
            });
        total.expected = total.expected.max(self.expected.get(&kind).copied().unwrap_or(0));
        total
    }

    /// Derivations: built, to build in all, running, failed.
    pub fn builds(&self) -> Counter {
        self.total(activity::BUILDS)
    }

    /// Store paths fetched from a binary cache.
    pub fn fetches(&self) -> Counter {
        self.total(activity::COPY_PATHS)
    }

    /// Bytes downloaded, of the expected total.
    pub fn downloads(&self) -> Counter {
        self.total(activity::FILE_TRANSFER)
    }

    /// The newest running build or fetch with its phase; a download only
    /// when neither runs (Nix queries caches by downloading).
    pub fn current_step(&self) -> Option<String> {
        let newest = |kinds: &[u64]| {
            self.order.iter().rev().find_map(|id| {
                let activity = &self.activities[id];
                if !activity.running || !kinds.contains(&activity.kind) || activity.label.is_empty() {
                    return None;
                }
                let phase = activity.drv.as_ref().and_then(|drv| self.phases.get(drv));
                Some(match phase {
                    Some(phase) => format!("{} ({phase})", activity.label),
                    None => activity.label.clone(),
                })
            })
        };
        newest(&[activity::BUILD, activity::SUBSTITUTE]).or_else(|| newest(&[activity::FILE_TRANSFER]))
    }

    /// The derivations Nix says failed, from its error messages.
    pub fn failed_derivations(&self) -> Vec<String> {
        self.errors.iter().filter_map(|e| failed_derivation(e)).collect()
    }

    /// The last build log lines of a derivation.
    pub fn log_tail(&self, drv: &str) -> Vec<String> {
        self.logs
            .get(drv)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// One line for the progress bar: counts, bytes, current step.
    pub fn summary(&self) -> String {
        let mut line = self.counts();
        if let Some(step) = self.current_step() {
            line.push_str(" | ");
            line.push_str(&step);
        }
        line
    }

    /// Builds, fetches and bytes downloaded, in one line.
    pub fn counts(&self) -> String {
        let builds = self.builds();
        let mut parts = vec![format!("{}/{} built", builds.done, builds.expected)];
        let fetches = self.fetches();
        if fetches.expected > 0 {
            parts.push(format!("{}/{} fetched", fetches.done, fetches.expected));
        }
        let downloads = self.downloads();
        if downloads.done > 0 || downloads.expected > 0 {
            parts.push(format!(
                "{} of {} downloaded",
                human_bytes(downloads.done),
                human_bytes(downloads.expected)
            ));
        }
        if builds.failed > 0 {
            parts.push(format!("{} failed", builds.failed));
        }
        parts.join(", ")
    }
}

/// The derivation whose builder failed, from one of Nix's error messages:
/// `builder for '/nix/store/...drv' failed with exit code N` (Nix 2.4 to
/// 2.20), or `Cannot build '/nix/store/...drv'.` followed by `Reason:
/// builder failed` (later ones; `Reason: 1 dependency failed` is not it).
pub fn failed_derivation(message: &str) -> Option<String> {
    let quoted_after = |marker: &str| -> Option<String> {
        let rest = &message[message.find(marker)? + marker.len()..];
        let drv = &rest[..rest.find('\'')?];
        drv.ends_with(".drv").then(|| drv.to_string())
    };
    quoted_after("builder for '").or_else(|| {
        message
            .contains("Reason: builder failed")
            .then(|| quoted_after("Cannot build '"))
            .flatten()
    })
}

/// `hello-2.12` from `/nix/store/<hash>-hello-2.12.drv`.
pub fn store_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    match base.split_once('-') {
        Some((hash, name)) if hash.len() == 32 => name.to_string(),
        _ => base.to_string(),
    }
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// What `nix build --dry-run` said it would do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DryRun {
    /// `.drv` paths to build.
    pub builds: Vec<String>,
    /// Store paths to fetch from binary caches.
    pub fetches: Vec<String>,
    /// Nix's size note for the fetches, e.g. `(12.34 MiB download, 56.78 MiB unpacked)`.
    pub fetch_sizes: Option<String>,
}

/// Reads the `these N derivations will be built:` / `these N paths will be
/// fetched (...)` lists from a dry run's messages.
pub fn parse_dry_run(text: &str) -> DryRun {
    let mut dry = DryRun::default();
    let mut section: Option<bool> = None; // Some(true): builds, Some(false): fetches
    for line in text.lines() {
        let message = match parse_line(line) {
            Line::Msg { text, .. } => text,
            Line::Plain(text) => text,
            _ => continue,
        };
        let trimmed = message.trim();
        if trimmed.starts_with("this derivation will be built") || trimmed.ends_with("derivations will be built:") {
            section = Some(true);
        } else if trimmed.starts_with("this path will be fetched") || trimmed.contains("paths will be fetched") {
            section = Some(false);
            dry.fetch_sizes = trimmed
                .find('(')
                .zip(trimmed.rfind(')'))
                .map(|(a, b)| trimmed[a..=b].to_string());
        } else if message.starts_with("  ") && trimmed.starts_with('/') {
            match section {
                Some(true) => dry.builds.push(trimmed.to_string()),
                Some(false) => dry.fetches.push(trimmed.to_string()),
                None => {}
            }
        } else {
            section = None;
        }
    }
    dry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[31;1merror:\u{1b}[0m builder for '\u{1b}[35;1m/nix/store/x.drv\u{1b}[0m'"),
            "error: builder for '/nix/store/x.drv'"
        );
    }

    #[test]
    fn store_names_drop_hash_and_drv() {
        assert_eq!(
            store_name("/nix/store/dks39dq0hfhxsi1vjpmzxh7xgbjka5q4-h5-a.drv"),
            "h5-a"
        );
        assert_eq!(
            store_name("/nix/store/vk605323xddr88i5jj4im25ds3awj8s1-hello-2.12"),
            "hello-2.12"
        );
        assert_eq!(store_name("odd"), "odd");
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn non_nix_lines_stay_plain() {
        assert_eq!(parse_line("warning: x"), Line::Plain("warning: x".into()));
        assert_eq!(parse_line("@nix {oops"), Line::Plain("@nix {oops".into()));
    }

    #[test]
    fn failed_derivation_is_read_from_the_error() {
        assert_eq!(
            failed_derivation("error: builder for '/nix/store/abc-x.drv' failed with exit code 3").as_deref(),
            Some("/nix/store/abc-x.drv")
        );
        assert_eq!(
            failed_derivation("error: Cannot build '/nix/store/abc-x.drv'.\n       Reason: builder for '/nix/store/abc-x.drv' failed with exit code 1.").as_deref(),
            Some("/nix/store/abc-x.drv")
        );
        // Nix 2.21 and later.
        assert_eq!(
            failed_derivation("error: Cannot build '/nix/store/abc-x.drv'.\n       Reason: builder failed with exit code 2.\n       Output paths:\n         /nix/store/abc-x").as_deref(),
            Some("/nix/store/abc-x.drv")
        );
        assert_eq!(
            failed_derivation("error: Cannot build '/nix/store/def-y.drv'.\n       Reason: 1 dependency failed."),
            None
        );
        assert_eq!(failed_derivation("error: something else"), None);
    }

    #[test]
    fn the_log_tail_is_bounded() {
        let mut progress = Progress::default();
        progress.apply(&parse_line(
            r#"@nix {"action":"start","fields":["/nix/store/00000000000000000000000000000000-x.drv","",1,1],"id":7,"level":3,"text":"building","type":105}"#,
        ));
        for n in 0..(LOG_TAIL_LINES + 5) {
            progress.apply(&Line::Result {
                id: 7,
                kind: result::BUILD_LOG_LINE,
                fields: vec![Value::String(format!("line {n}"))],
            });
        }
        let tail = progress.log_tail("/nix/store/00000000000000000000000000000000-x.drv");
        assert_eq!(tail.len(), LOG_TAIL_LINES);
        assert_eq!(tail.last().unwrap(), &format!("line {}", LOG_TAIL_LINES + 4));
        assert_eq!(tail[0], "line 5");
    }

    fn fixture_text(name: &str) -> String {
        let path = format!("{}/tests/fixtures/nix-log/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    fn fixture(name: &str) -> Progress {
        Progress::from_log(&fixture_text(name))
    }

    /// Replays a recorded log up to and including the first line that
    /// contains `marker`: the progress then, and the events on the way.
    fn replay_until(name: &str, marker: &str) -> (Progress, Vec<Event>) {
        let mut progress = Progress::default();
        let mut events = Vec::new();
        for line in fixture_text(name).lines() {
            events.extend(progress.apply(&parse_line(line)));
            if line.contains(marker) {
                break;
            }
        }
        (progress, events)
    }

    #[test]
    fn a_recorded_build_counts_both_derivations() {
        let progress = fixture("build.log");
        assert_eq!(
            progress.builds(),
            Counter {
                done: 2,
                expected: 2,
                running: 0,
                failed: 0
            }
        );
        assert_eq!(progress.fetches().expected, 0);
        assert!(progress.errors.is_empty(), "{:?}", progress.errors);
        assert_eq!(progress.current_step(), None, "everything stopped");
        let b = "/nix/store/mc0jysa55ih7gr4d4jm5ll3wkgznd6zc-nixlog-b.drv";
        assert_eq!(progress.log_tail(b), ["building b", "step two"]);
        assert_eq!(progress.summary(), "2/2 built");
    }

    #[test]
    fn the_current_step_is_the_running_build_with_its_phase() {
        // Replay up to b's first log line: a is done, b is in installPhase.
        let (progress, events) = replay_until("build.log", "\"building b\"");
        assert_eq!(progress.builds().done, 1);
        assert_eq!(
            progress.current_step().as_deref(),
            Some("building nixlog-b (installPhase)")
        );
        assert_eq!(progress.summary(), "1/2 built | building nixlog-b (installPhase)");
        assert_eq!(
            events,
            [
                Event::Started("building nixlog-a".into()),
                Event::Phase {
                    name: "nixlog-a".into(),
                    phase: "buildPhase".into()
                },
                Event::Log {
                    name: "nixlog-a".into(),
                    line: "building a".into()
                },
                Event::Started("building nixlog-b".into()),
                Event::Phase {
                    name: "nixlog-b".into(),
                    phase: "installPhase".into()
                },
                Event::Log {
                    name: "nixlog-b".into(),
                    line: "building b".into()
                },
            ]
        );
    }

    #[test]
    fn a_recorded_fetch_counts_paths_and_bytes() {
        let progress = fixture("fetch.log");
        assert_eq!(progress.builds().done, 0);
        let fetches = progress.fetches();
        assert_eq!((fetches.done, fetches.expected), (1, 1));
        let downloads = progress.downloads();
        assert_eq!((downloads.done, downloads.expected), (368, 368), "the NAR's bytes");
        assert_eq!(progress.summary(), "0/0 built, 1/1 fetched, 368 B of 368 B downloaded");
    }

    #[test]
    fn a_fetch_in_progress_shows_the_path_not_its_download() {
        let (progress, events) = replay_until("fetch.log", "nar.xz");
        assert_eq!(progress.current_step().as_deref(), Some("fetching nixlog-b"));
        assert_eq!(events, [Event::Started("fetching nixlog-b".into())]);
    }

    #[test]
    fn a_recorded_failure_names_the_derivation_and_keeps_its_log() {
        let progress = fixture("fail.log");
        let drv = "/nix/store/q92m70lxpcjkahb73sh9zr1qq26v75qh-nixlog-fail.drv";
        assert_eq!(progress.failed_derivations(), [drv]);
        assert_eq!(progress.log_tail(drv), ["line one", "line two"]);
        assert_eq!(progress.builds().failed, 1);
        assert_eq!(
            progress.errors,
            [format!("error: builder for '{drv}' failed with exit code 3")]
        );
    }

    #[test]
    fn recorded_dry_runs_list_builds_and_fetches() {
        let build = parse_dry_run(&fixture_text("dry-run-build.log"));
        assert_eq!(
            build.builds,
            [
                "/nix/store/j35075wqklksl78bd7nvg76vhj2jj51k-nixlog-a.drv",
                "/nix/store/mc0jysa55ih7gr4d4jm5ll3wkgznd6zc-nixlog-b.drv"
            ]
        );
        assert!(build.fetches.is_empty());
        let fetch = parse_dry_run(&fixture_text("dry-run-fetch.log"));
        assert!(fetch.builds.is_empty());
        assert_eq!(fetch.fetches, ["/nix/store/b7j35mlpd6qhyf6xa6sw2gn07z8fmrlm-nixlog-b"]);
        assert_eq!(
            fetch.fetch_sizes.as_deref(),
            Some("(0.00 MiB download, 0.01 MiB unpacked)")
        );
    }
}
