//! The audit trail: an append-only JSONL file on the host, one record per
//! line, each carrying the sha256 of the line before it, so that changing,
//! removing or reordering any record breaks every link after it. The chain
//! only proves order and integrity of what is in the file: whoever can
//! write the file can rewrite the whole chain, which is why its head is
//! published outside it (docs/warden.md).
//!
//! A record is appended whole (one `write`, then `fsync`) under an exclusive
//! lock; `append` returns only after the fsync. A process killed mid-append
//! can leave a torn last line (no final newline): `verify` reports it as
//! torn, and the next `append` discards it (that record was never
//! acknowledged to anyone) and records that it did.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::schema::plan::STATE_DIR;

/// Where the warden keeps the trail unless told otherwise.
pub fn default_path() -> String {
    format!("{STATE_DIR}/warden/audit.jsonl")
}

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the trail. Field order is the serialization order, so the
/// bytes a record hashes to are fixed by this struct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1 for the first record, then +1 per line.
    pub seq: u64,
    /// UTC, RFC 3339, seconds.
    pub time: String,
    /// What happened: `command`, `command.refused`, `mute`, `unmute`, ...
    pub kind: String,
    /// Who did it: a Matrix user id, or `warden`.
    pub actor: String,
    /// What it was done to: an agent, a room.
    pub subject: String,
    pub detail: String,
    /// sha256 (hex) of the previous line's bytes, without its newline.
    pub prev: String,
}

/// What to append; seq, time and prev are the log's to fill in.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub kind: &'a str,
    pub actor: &'a str,
    pub subject: &'a str,
    pub detail: &'a str,
}

/// The last good record of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    /// sha256 of the last line: the next record's `prev`.
    pub sha256: String,
}

impl Head {
    fn genesis() -> Head {
        Head {
            seq: 0,
            sha256: GENESIS.to_string(),
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian,
/// Howard Hinnant's days-to-civil).
pub fn rfc3339(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).unwrap_or(i64::MAX);
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub fn now() -> String {
    rfc3339(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// Appends one record and returns the new head. Creates the file (0600)
/// and its directory (0700) when missing.
pub fn append(path: &Path, entry: &Entry) -> Result<Head> {
    let mut file = open_locked(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("failed to read audit log `{}`", path.display()))?;
    let mut head = head_of(path, &bytes)?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        head = discard_torn(path, &mut file, &bytes, complete, &head)?;
    }
    write_record(path, &mut file, entry, &head)
}

fn open_locked(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("failed to create directory `{}`", dir.display()))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to open audit log `{}`", path.display()))?;
    // Two appenders (the warden and an operator's command) must not
    // interleave or both extend the same head. Released on close.
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("failed to lock audit log `{}`", path.display()))?;
    Ok(file)
}

/// The head of the complete lines of `bytes`; refuses a chain whose last
/// complete line is not a record (the seq to continue from is unknown).
fn head_of(path: &Path, bytes: &[u8]) -> Result<Head> {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete == 0 {
        return Ok(Head::genesis());
    }
    let body = &bytes[..complete - 1];
    let start = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = &body[start..];
    let line = body[..start].iter().filter(|&&b| b == b'\n').count() + 1;
    let record: Record = serde_json::from_slice(last).with_context(|| {
        format!(
            "audit log `{}` line {line} is not a record; refusing to extend it\nhint: `appliance audit verify {}` says what is wrong",
            path.display(),
            path.display()
        )
    })?;
    Ok(Head {
        seq: record.seq,
        sha256: sha256_hex(last),
    })
}

/// Cuts a torn last line and records what was cut, so the repair itself is
/// part of the chain.
fn discard_torn(path: &Path, file: &mut File, bytes: &[u8], complete: usize, head: &Head) -> Result<Head> {
    let torn = &bytes[complete..];
    file.set_len(complete as u64)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to cut the torn last line of audit log `{}`", path.display()))?;
    let detail = format!(
        "discarded a torn last line of {} bytes (sha256 {}): an append was interrupted before its fsync",
        torn.len(),
        sha256_hex(torn)
    );
    let entry = Entry {
        kind: "audit.repair",
        actor: "warden",
        subject: &path.display().to_string(),
        detail: &detail,
    };
    write_record(path, file, &entry, head)
}

fn write_record(path: &Path, file: &mut File, entry: &Entry, head: &Head) -> Result<Head> {
    let record = Record {
        seq: head.seq + 1,
        time: now(),
        kind: entry.kind.to_string(),
        actor: entry.actor.to_string(),
        subject: entry.subject.to_string(),
        detail: entry.detail.to_string(),
        prev: head.sha256.clone(),
    };
    let json = serde_json::to_string(&record).context("failed to serialize an audit record")?;
    let mut line = json.clone().into_bytes();
    line.push(b'\n');
    file.seek(SeekFrom::End(0))
        .and_then(|_| file.write_all(&line))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to append to audit log `{}`", path.display()))?;
    Ok(Head {
        seq: record.seq,
        sha256: sha256_hex(json.as_bytes()),
    })
}

/// Why a chain does not verify: the first bad line (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub line: usize,
    pub why: String,
}

/// Checks every link; the head of a sound chain, or the first bad line.
pub fn verify(bytes: &[u8]) -> Result<Head, Broken> {
    let mut head = Head::genesis();
    if bytes.is_empty() {
        return Ok(head);
    }
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let body = &bytes[..bytes.len() - usize::from(ends_with_newline)];
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        if !ends_with_newline && number == lines.len() {
            return Err(Broken {
                line: number,
                why: format!(
                    "torn last line ({} bytes, no final newline): an append was interrupted; the next append discards it",
                    line.len()
                ),
            });
        }
        head = check_line(line, number, &head)?;
    }
    Ok(head)
}

fn check_line(line: &[u8], number: usize, head: &Head) -> Result<Head, Broken> {
    let broken = |why: String| Broken { line: number, why };
    let record: Record = serde_json::from_slice(line).map_err(|e| broken(format!("not a record: {e}")))?;
    let mut problems = Vec::new();
    if record.prev != head.sha256 {
        problems.push(if number == 1 {
            "`prev` is not the genesis value (records before it were removed)".to_string()
        } else {
            format!(
                "`prev` is not the sha256 of line {} (line {} was altered, or lines were removed, inserted or reordered here)",
                number - 1,
                number - 1
            )
        });
    }
    if record.seq != head.seq + 1 {
        problems.push(format!(
            "`seq` is {} where {} was expected (a record is missing or out of order)",
            record.seq,
            head.seq + 1
        ));
    }
    if !problems.is_empty() {
        return Err(broken(problems.join("; ")));
    }
    Ok(Head {
        seq: record.seq,
        sha256: sha256_hex(line),
    })
}

/// Reads and verifies the file at `path`, under a shared lock so that an
/// append in progress is not mistaken for a torn line.
pub fn verify_file(path: &Path) -> Result<Result<Head, Broken>> {
    let mut file = File::open(path).with_context(|| format!("failed to open audit log `{}`", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
        .with_context(|| format!("failed to lock audit log `{}`", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("failed to read audit log `{}`", path.display()))?;
    Ok(verify(&bytes))
}

/// Makes text safe for a terminal: control characters (C0, DEL, C1) and
/// the bidirectional overrides that can disguise a line are escaped.
pub fn escape_for_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines, one per record, escaped for a terminal.
pub fn tail(bytes: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|line| match serde_json::from_str::<Record>(line) {
            Ok(r) => escape_for_terminal(&format!(
                "#{} {} {} {} -> {}: {}",
                r.seq, r.time, r.kind, r.actor, r.subject, r.detail
            )),
            Err(_) => format!("(not a record) {}", escape_for_terminal(line)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(detail: &str) -> Entry<'_> {
        Entry {
            kind: "test",
            actor: "@gendo:magi",
            subject: "@casper:magi",
            detail,
        }
    }

    fn chain(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        for i in 0..n {
            append(&path, &entry(&format!("record {i}"))).unwrap();
        }
        (dir, path)
    }

    /// Where `verify` finds a chain of four records broken once `edit` has
    /// changed its lines (one record each).
    fn broken(edit: impl FnOnce(&mut Vec<String>)) -> Broken {
        let (_dir, path) = chain(4);
        let mut lines = lines(&path);
        edit(&mut lines);
        verify(format!("{}\n", lines.join("\n")).as_bytes()).unwrap_err()
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_fresh_chain_verifies_and_links_each_line_to_the_one_before() {
        let (_dir, path) = chain(4);
        let text = std::fs::read_to_string(&path).unwrap();
        let head = verify(text.as_bytes()).unwrap();
        assert_eq!(head.seq, 4);
        let lines = lines(&path);
        assert_eq!(head.sha256, sha256_hex(lines[3].as_bytes()));
        let first: Record = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first.prev, GENESIS);
        let second: Record = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second.prev, sha256_hex(lines[0].as_bytes()));
        assert_eq!(verify(b""), Ok(Head::genesis()));
        assert!(verify(b"\n").unwrap_err().why.starts_with("not a record"));
    }

    #[test]
    fn concurrent_appenders_never_fork_the_chain() {
        let (_dir, path) = chain(0);
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        append(&path, &entry(&format!("writer {w} record {i}"))).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(verify_file(&path).unwrap().unwrap().seq, 100);
    }

    #[test]
    fn a_flipped_byte_is_named() {
        let (_dir, path) = chain(4);
        let mut bytes = std::fs::read(&path).unwrap();
        // Inside line 2's detail: still JSON, so line 3's link breaks.
        let at = bytes.windows(8).position(|w| w == b"record 1").unwrap();
        bytes[at + 7] ^= 0x01;
        let broken = verify(&bytes).unwrap_err();
        assert_eq!(broken.line, 3, "{broken:?}");
        assert!(broken.why.contains("line 2 was altered"), "{broken:?}");
        // A flip that breaks the JSON is named on its own line.
        let mut bytes = std::fs::read(&path).unwrap();
        let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[second] = b'x';
        let broken = verify(&bytes).unwrap_err();
        assert_eq!(broken.line, 2);
        assert!(broken.why.starts_with("not a record"), "{broken:?}");
    }

    #[test]
    fn a_deleted_line_is_named() {
        let broken = broken(|lines| {
            lines.remove(1);
        });
        assert_eq!(broken.line, 2);
        assert!(broken.why.contains("`seq` is 3 where 2 was expected"), "{broken:?}");
        // The first line removed: the new first line does not start the chain.
        let broken = self::broken(|lines| {
            lines.remove(0);
        });
        assert_eq!(broken.line, 1);
        assert!(broken.why.contains("genesis"), "{broken:?}");
    }

    #[test]
    fn a_reordered_line_is_named() {
        let broken = broken(|lines| lines.swap(1, 2));
        assert_eq!(broken.line, 2);
        assert!(broken.why.contains("`prev` is not the sha256 of line 1"), "{broken:?}");
        assert!(broken.why.contains("`seq` is 3 where 2 was expected"), "{broken:?}");
    }

    #[test]
    fn a_torn_last_line_is_reported_then_discarded_by_the_next_append() {
        let (_dir, path) = chain(3);
        let good = std::fs::read(&path).unwrap();
        // As a kill mid-write leaves it: part of a record, no newline.
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"seq":4,"time":"2026-"#);
        std::fs::write(&path, &torn).unwrap();
        let broken = verify(&torn).unwrap_err();
        assert_eq!(broken.line, 4);
        assert!(broken.why.starts_with("torn last line"), "{broken:?}");

        let head = append(&path, &entry("after the kill")).unwrap();
        assert_eq!(head.seq, 5);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(&good), "complete records must be kept");
        assert_eq!(verify(&bytes), Ok(head));
        let lines = lines(&path);
        let repair: Record = serde_json::from_str(&lines[3]).unwrap();
        assert_eq!(repair.kind, "audit.repair");
        assert!(
            repair.detail.contains("torn last line of 22 bytes"),
            "{}",
            repair.detail
        );
    }

    #[test]
    fn append_refuses_to_extend_a_last_line_that_is_not_a_record() {
        let (_dir, path) = chain(1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"garbage\n");
        std::fs::write(&path, &bytes).unwrap();
        let error = format!("{:#}", append(&path, &entry("x")).unwrap_err());
        assert!(error.contains("line 2 is not a record"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing appended");
    }

    #[test]
    fn tail_escapes_control_characters() {
        let (_dir, path) = chain(2);
        append(&path, &entry("evil\x1b[2J\r\u{202e}text")).unwrap();
        let shown = tail(&std::fs::read(&path).unwrap(), 2);
        assert_eq!(shown.len(), 2);
        assert!(shown[0].starts_with("#2 "), "{shown:?}");
        assert!(shown[1].ends_with(r"evil\u{1b}[2J\u{d}\u{202e}text"), "{shown:?}");
        assert!(!shown.iter().any(|l| l.chars().any(char::is_control)));
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_400_681), "2026-12-04T16:11:21Z");
    }
}
