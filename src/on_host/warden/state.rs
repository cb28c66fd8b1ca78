//! What the warden remembers across restarts: the `/sync` position (so a
//! restart never replays old commands), who it muted and at which level
//! they were before, and the loop breaker's counts. One JSON file, written
//! atomically after each batch of events.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use crate::on_host::atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The warden's own files accept fields they do not know (no
/// `deny_unknown_fields` here or in approvals.rs): an upgrade's rollback
/// keeps the warden's directory, so an older warden reads what a newer one
/// wrote, and must start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// `next_batch` of the last handled `/sync`; none before the first.
    pub since: Option<String>,
    /// Room id -> agent -> why and since when it is muted there.
    pub mutes: BTreeMap<String, BTreeMap<String, Mute>>,
    /// Room id -> agent messages since the last human one (answers to a
    /// human's mention not counted: `owed`).
    pub streaks: BTreeMap<String, u32>,
    /// Room id -> agent -> when a human mentioned it, for each mention it
    /// has not answered yet (owed.rs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub owed: super::owed::Owed,
    /// Agent -> `origin_server_ts` (ms) of its last message seen.
    pub last_seen: BTreeMap<String, u64>,
    /// End (Unix ns, inclusive) of the last Docker events window handled;
    /// the next poll starts just after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_until_ns: Option<u64>,
    /// Agent (localpart) -> how far its record of tool calls was audited.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_cursors: BTreeMap<String, super::toollog::Cursor>,
    /// How far the egress proxy's log was read.
    #[serde(default)]
    pub proxy_log: super::denials::LogCursor,
    /// Sandboxes `!halt --stop` stopped, started again by `!resume`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub stopped: std::collections::BTreeSet<String>,
    /// Sandbox -> since when it is seen down, and whether that was said.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unready: BTreeMap<String, Unready>,
    /// Sandbox -> host name -> the admins' open egress grant: saved before
    /// the proxy's grant file is written, so a grant the file holds is
    /// always one the warden will expire.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<String, BTreeMap<String, Grant>>,
    /// When the last backup run the warden reported ended (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_finished: Option<u64>,
    /// Event id of an egress denial card in the ops room -> what it asks,
    /// so an admin's reaction on it can grant or refuse, also after a
    /// restart (reactions.rs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cards: BTreeMap<String, EgressCard>,
}

/// A denial card: one sandbox refused one host, grantable with `!allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressCard {
    pub sandbox: String,
    /// The host name, as `!allow` takes it (no port).
    pub host: String,
    /// Unix seconds it was posted at.
    pub posted: u64,
    /// The first admin's reaction on it; later ones are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered: Option<Answer>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub by: String,
    /// `allow` or `deny`.
    pub what: String,
    pub at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The admin who gave it.
    pub by: String,
    /// Unix seconds it was given at, and it ends at.
    pub since: u64,
    pub until: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unready {
    /// Unix seconds of the first poll that saw it down.
    pub since: u64,
    /// The ops room was told (once per time it went down).
    pub reported: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    /// The agent's entry in the room's `users` before the mute; none: it
    /// had no entry (the room's `users_default`), restored by removing it.
    pub previous: Option<i64>,
    /// The admin whose `!halt` holds it; lifted only by `!resume`.
    pub halted_by: Option<String>,
    /// Held by the loop breaker; lifted by a human message or `!resume`.
    pub looped: bool,
}

impl Mute {
    pub fn held(&self) -> bool {
        self.halted_by.is_some() || self.looped
    }

    pub fn reason(&self) -> String {
        match (&self.halted_by, self.looped) {
            (Some(admin), true) => format!("halted by {admin}, and by the loop breaker"),
            (Some(admin), false) => format!("halted by {admin}"),
            (None, _) => "by the loop breaker".to_string(),
        }
    }
}

impl State {
    /// Every mute in force, as (room id, agent, the mute): what `!status`
    /// lists and what refuses an upgrade.
    pub fn held_mutes(&self) -> impl Iterator<Item = (&str, &str, &Mute)> {
        self.mutes.iter().flat_map(|(room, agents)| {
            agents
                .iter()
                .filter(|(_, mute)| mute.held())
                .map(move |(agent, mute)| (room.as_str(), agent.as_str(), mute))
        })
    }

    pub fn load(path: &Path) -> Result<State> {
        match fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("failed to parse warden state `{}`\nhint: it is the warden's own file; remove it to start afresh (muted agents then stay muted until an admin raises their power level)", path.display())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("failed to read warden state `{}`", path.display())),
        }
    }

    /// Temp file + fsync + rename (atomic on one filesystem: the temp file
    /// sits next to the target), then the directory is synced.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("failed to serialize warden state")? + "\n";
        atomic::replace(path, text.as_bytes(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_wardens_fields_do_not_stop_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = State {
            since: Some("s9_1".into()),
            ..State::default()
        };
        let mut written = serde_json::to_value(&state).unwrap();
        written["added_by_a_later_version"] = serde_json::json!({ "x": 1 });
        std::fs::write(&path, written.to_string()).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
        let text = r#"{"next":3,"requests":{},"added_by_a_later_version":[]}"#;
        let approvals: crate::on_host::warden::approvals::Approvals = serde_json::from_str(text).unwrap();
        assert_eq!(approvals.next, 3);
    }

    #[test]
    fn state_round_trips_and_a_missing_file_is_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(State::load(&path).unwrap(), State::default());
        let mut state = State {
            since: Some("s72_1".into()),
            ..State::default()
        };
        state.mutes.entry("!r:magi".into()).or_default().insert(
            "@casper:magi".into(),
            Mute {
                previous: None,
                halted_by: Some("@gendo:magi".into()),
                looped: false,
            },
        );
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), state);
    }

    #[test]
    fn held_mutes_leave_out_a_lifted_one() {
        let mut state = State::default();
        let room = state.mutes.entry("!r:magi".into()).or_default();
        room.insert(
            "@casper:magi".into(),
            Mute {
                previous: None,
                halted_by: None,
                looped: true,
            },
        );
        // One that neither a halt nor the loop breaker holds any more.
        room.insert("@melchior:magi".into(), Mute::default());
        let held: Vec<(&str, &str)> = state.held_mutes().map(|(room, agent, _)| (room, agent)).collect();
        assert_eq!(held, [("!r:magi", "@casper:magi")]);
    }
}
