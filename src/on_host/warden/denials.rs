//! Egress denials: the Matrix host's proxy log (squid's native format,
//! `time elapsed client action/code size method URL ...`), read on from
//! where the last read stopped, summarised per sandbox and destination:
//! one ops-room notice per poll, one `egress.denied` record per pair.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::state::EgressCard;
use super::{Warden, grants};

/// How far the proxy log was read: a byte offset into one file (its inode,
/// so a rotated log is read from its start).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogCursor {
    pub inode: u64,
    pub offset: u64,
}

/// A request the proxy refused: who asked, for where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub client: String,
    pub destination: String,
    /// When squid logged it (Unix seconds, its first field).
    pub time: u64,
}

/// A refused request of one log line; none for anything else.
pub fn parse_denial(line: &str) -> Option<Denial> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (client, action, method, url) = (fields.get(2)?, fields.get(3)?, fields.get(5)?, fields.get(6)?);
    if !action.starts_with("TCP_DENIED") {
        return None;
    }
    let destination = if *method == "CONNECT" {
        url.to_string()
    } else {
        let rest = url.split_once("://").map_or(*url, |(_, rest)| rest);
        rest.split('/').next().unwrap_or(rest).to_string()
    };
    let time = fields[0].split('.').next().and_then(|t| t.parse().ok()).unwrap_or(0);
    Some(Denial {
        client: client.to_string(),
        destination,
        time,
    })
}

/// The complete lines appended to `path` since `cursor`, which moves past
/// them. A missing log has none; a new or shorter file is read from its
/// start.
pub fn read_new(path: &Path, cursor: &mut LogCursor) -> Result<Vec<String>> {
    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot open `{}`", path.display())),
    };
    let meta = file.metadata()?;
    if meta.ino() != cursor.inode || meta.len() < cursor.offset {
        *cursor = LogCursor {
            inode: meta.ino(),
            offset: 0,
        };
    }
    file.seek(SeekFrom::Start(cursor.offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    // A line being written has no newline yet: it is read next time.
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    cursor.offset += complete as u64;
    Ok(String::from_utf8_lossy(&bytes[..complete])
        .lines()
        .map(str::to_string)
        .collect())
}

/// (sandbox, destination) -> refused requests and when the last one was
/// (Unix seconds); a client address no sandbox has is named as itself.
pub fn summarize(lines: &[String], names: &BTreeMap<String, String>) -> BTreeMap<(String, String), (u64, u64)> {
    let mut summary = BTreeMap::new();
    for denial in lines.iter().filter_map(|l| parse_denial(l)) {
        let who = names.get(&denial.client).cloned().unwrap_or(denial.client);
        let (count, last) = summary.entry((who, denial.destination)).or_insert((0, 0));
        *count += 1;
        *last = (*last).max(denial.time);
    }
    summary
}

impl Warden<'_> {
    pub(super) fn watch_denials(&mut self) -> Result<()> {
        self.forget_cards();
        let Some(path) = self.proxy_log.clone() else {
            return Ok(());
        };
        let lines = match read_new(&path, &mut self.state.proxy_log) {
            Ok(lines) => lines,
            Err(error) => {
                if !self.proxy_log_failing {
                    self.proxy_log_failing = true;
                    self.audit(
                        "proxy_log.unavailable",
                        "warden",
                        &path.display().to_string(),
                        &format!("{error:#}"),
                    )?;
                }
                return Ok(());
            }
        };
        self.proxy_log_failing = false;
        let summary = summarize(&lines, &self.addresses);
        let mut parts = Vec::new();
        let mut cards = Vec::new();
        for ((sandbox, destination), (count, last)) in &summary {
            let detail = format!("{count} request(s) to {destination} refused by the egress proxy");
            self.audit("egress.denied", sandbox, destination, &detail)?;
            let mut part = format!("{sandbox} → {destination} ({count}×)");
            let host = crate::common::grants::check_host(destination).ok();
            // Refused after a grant was given (not a request from before it
            // read in the same poll).
            let granted = host.as_ref().is_some_and(|h| {
                self.state
                    .grants
                    .get(sandbox)
                    .and_then(|g| g.get(h))
                    .is_some_and(|g| g.since <= *last)
            });
            if granted {
                // The grant was open and the proxy still refused: the name
                // resolves to an address no grant reaches.
                part.push_str(
                    " despite an open grant: it resolves to a private, loopback, link-local or metadata address",
                );
            } else if let (Some(hint), Some(host)) = (self.grant_hint(sandbox, destination), host) {
                // A card of its own, so a reaction names one grant.
                let default = grants::compact_duration(self.grant_policy.default_secs);
                part.push_str(&format!(
                    ", to grant it: {hint} (or react ✅ to grant it for {default}, ❌ to refuse)"
                ));
                cards.push((part, sandbox.clone(), host));
                continue;
            }
            parts.push(part);
        }
        for (text, sandbox, host) in cards {
            let ops = self.ops.clone();
            let event = self.post(&ops, &format!("egress denied: {text}"), None)?;
            let card = EgressCard {
                sandbox,
                host,
                posted: grants::unix_now(),
                answered: None,
            };
            self.state.cards.insert(event, card);
        }
        if !parts.is_empty() {
            self.ops_notice(&format!("egress denied: {}", parts.join("; ")))?;
        }
        self.state.save(&self.state_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENIED: &str =
        "1796458100.123    0 10.88.0.4 TCP_DENIED/403 3891 CONNECT web.rehearsal.test:443 - HIER_NONE/- text/html";
    const ALLOWED: &str =
        "1796458100.456  120 10.88.0.4 TCP_TUNNEL/200 5120 CONNECT api.github.com:443 - HIER_DIRECT/10.200.0.2 -";
    const DENIED_GET: &str =
        "1796458101.000    0 10.88.0.3 TCP_DENIED/403 3891 GET http://10.88.0.1:8008/_matrix/x - HIER_NONE/- text/html";

    #[test]
    fn denials_are_parsed_and_the_rest_ignored() {
        assert_eq!(
            parse_denial(DENIED),
            Some(Denial {
                client: "10.88.0.4".into(),
                destination: "web.rehearsal.test:443".into(),
                time: 1_796_458_100,
            })
        );
        assert_eq!(parse_denial(ALLOWED), None);
        assert_eq!(parse_denial(DENIED_GET).unwrap().destination, "10.88.0.1:8008");
        assert_eq!(parse_denial("garbage"), None);
    }

    #[test]
    fn the_log_is_read_on_from_the_last_complete_line_and_from_the_start_when_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut cursor = LogCursor::default();
        assert!(read_new(&path, &mut cursor).unwrap().is_empty());
        fs::write(&path, format!("{DENIED}\n{ALLOWED}\n{DENIED_GET}")).unwrap();
        assert_eq!(read_new(&path, &mut cursor).unwrap(), [DENIED, ALLOWED]);
        fs::write(&path, format!("{DENIED}\n{ALLOWED}\n{DENIED_GET}\n")).unwrap();
        assert_eq!(read_new(&path, &mut cursor).unwrap(), [DENIED_GET]);
        assert!(read_new(&path, &mut cursor).unwrap().is_empty());
        // Rotated: a new, shorter file.
        fs::remove_file(&path).unwrap();
        fs::write(&path, format!("{DENIED}\n")).unwrap();
        assert_eq!(read_new(&path, &mut cursor).unwrap(), [DENIED]);
    }

    #[test]
    fn denials_are_summarised_per_sandbox_and_destination() {
        let names = BTreeMap::from([("10.88.0.4".to_string(), "balthasar".to_string())]);
        let lines: Vec<String> = [DENIED, DENIED, ALLOWED, DENIED_GET].map(String::from).to_vec();
        let summary = summarize(&lines, &names);
        assert_eq!(
            summary,
            BTreeMap::from([
                (("10.88.0.3".into(), "10.88.0.1:8008".into()), (1, 1_796_458_101)),
                (
                    ("balthasar".into(), "web.rehearsal.test:443".into()),
                    (2, 1_796_458_100)
                ),
            ])
        );
    }
}
