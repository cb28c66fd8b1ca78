//! Reading the tool calls an agent made from where its own software records
//! them (the plan's `tool_log`: a file or directory in its state volume).
//! What is read is the agent's account of itself: a sandbox an attacker
//! owns can leave calls out; what it did record is kept in the warden's
//! chain, out of its reach.
//!
//! The SQLite stores are live databases in WAL mode, owned by the agent's
//! user. The warden never opens them in place (as root it would create
//! `-shm` files the agent then cannot use): it copies the database and its
//! `-wal` into a private directory and reads the copy; SQLite rebuilds the
//! index from the WAL there. A copy taken mid-write can be torn; the read
//! then fails and the next poll tries again from the same cursor.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::on_host::bootstrap::secrets::env_entries;
use crate::schema::plan::ToolLogFormat;

/// One tool call: the tool's name and a short account of its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub name: String,
    pub target: String,
}

/// How far an agent's record has been read: the last row of a database, or
/// the lines read of each session file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    #[serde(default)]
    pub row: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lines: BTreeMap<String, u64>,
}

/// The longest target kept in a record, in characters.
const MAX_TARGET: usize = 200;

/// The argument keys that say what a call acted on, in the order shown.
const TARGET_KEYS: &[&str] = &["action", "command", "cmd", "url", "targetUrl", "query", "path", "code"];

/// The calls recorded at `path` after `cursor`, which moves past them. A
/// record that does not exist yet (the agent never ran) has none.
pub fn read_new(format: ToolLogFormat, path: &Path, cursor: &mut Cursor) -> Result<Vec<ToolCall>> {
    match format {
        ToolLogFormat::HermesMessages => read_sqlite(path, cursor, hermes_rows),
        ToolLogFormat::OpenclawTranscript => read_sqlite(path, cursor, openclaw_rows),
        ToolLogFormat::PicoclawSessions => read_sessions(path, cursor),
    }
}

type Rows = fn(&rusqlite::Connection, i64) -> rusqlite::Result<Vec<(i64, Vec<ToolCall>)>>;

fn read_sqlite(path: &Path, cursor: &mut Cursor, rows: Rows) -> Result<Vec<ToolCall>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let copy = tempfile::tempdir().context("failed to make a private directory for the copy")?;
    let db = copy.path().join("copy.db");
    fs::copy(path, &db).with_context(|| format!("failed to copy `{}`", path.display()))?;
    let wal = path.with_file_name(format!(
        "{}-wal",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    match fs::copy(&wal, copy.path().join("copy.db-wal")) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("failed to copy `{}`", wal.display()));
        }
        _ => {}
    }
    let connection =
        rusqlite::Connection::open(&db).with_context(|| format!("cannot open a copy of `{}`", path.display()))?;
    let found = rows(&connection, cursor.row).with_context(|| format!("cannot read a copy of `{}`", path.display()))?;
    let mut calls = Vec::new();
    for (row, row_calls) in found {
        cursor.row = cursor.row.max(row);
        calls.extend(row_calls);
    }
    Ok(calls)
}

/// Hermes: `messages` rows whose `tool_calls` is an OpenAI-style list.
fn hermes_rows(connection: &rusqlite::Connection, after: i64) -> rusqlite::Result<Vec<(i64, Vec<ToolCall>)>> {
    let mut statement = connection
        .prepare("SELECT id, tool_calls FROM messages WHERE id > ?1 AND tool_calls IS NOT NULL ORDER BY id")?;
    statement
        .query_map([after], |row| {
            let id: i64 = row.get(0)?;
            let text: String = row.get(1)?;
            let value = serde_json::from_str(&text).unwrap_or(Value::Null);
            Ok((id, openai_calls(&value)))
        })?
        .collect()
}

/// OpenClaw: `transcript_events` whose message content has `toolCall`
/// parts; an event is JSON, or zstd-compressed JSON when large.
fn openclaw_rows(connection: &rusqlite::Connection, after: i64) -> rusqlite::Result<Vec<(i64, Vec<ToolCall>)>> {
    let mut statement = connection
        .prepare("SELECT rowid, event_json, event_zstd FROM transcript_events WHERE rowid > ?1 ORDER BY rowid")?;
    statement
        .query_map([after], |row| {
            let id: i64 = row.get(0)?;
            let json: Option<String> = row.get(1)?;
            let compressed: Option<Vec<u8>> = row.get(2)?;
            let text = json.or_else(|| {
                compressed
                    .and_then(|bytes| zstd::decode_all(bytes.as_slice()).ok())
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            });
            let value = text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
            Ok((id, openclaw_calls(&value)))
        })?
        .collect()
}

fn openclaw_calls(event: &Value) -> Vec<ToolCall> {
    let Some(parts) = event["message"]["content"].as_array() else {
        return Vec::new();
    };
    parts
        .iter()
        .filter(|part| part["type"] == "toolCall")
        .map(|part| {
            let name = part["name"].as_str().unwrap_or("?");
            let arguments = &part["arguments"];
            // Tools behind OpenClaw's compact tool surface are called
            // through `tool_call`, the real tool's id inside.
            match (name, arguments["id"].as_str()) {
                ("tool_call", Some(inner)) => call(inner, &arguments["args"]),
                _ => call(name, arguments),
            }
        })
        .collect()
}

/// PicoClaw: every `*.jsonl` in the directory, a message per line.
fn read_sessions(dir: &Path, cursor: &mut Cursor) -> Result<Vec<ToolCall>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list `{}`", dir.display())),
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut calls = Vec::new();
    for file in files {
        let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let done = cursor.lines.get(&name).copied().unwrap_or(0);
        let reader =
            BufReader::new(fs::File::open(&file).with_context(|| format!("cannot open `{}`", file.display()))?);
        let mut count = 0;
        for line in reader.lines() {
            let line = line.with_context(|| format!("cannot read `{}`", file.display()))?;
            count += 1;
            if count <= done {
                continue;
            }
            let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let message = if value.get("message").is_some() {
                &value["message"]
            } else {
                &value
            };
            calls.extend(openai_calls(&message["tool_calls"]));
        }
        cursor.lines.insert(name, count.max(done));
    }
    Ok(calls)
}

/// `[{"function": {"name": ..., "arguments": "<JSON>"}}, ...]`.
fn openai_calls(list: &Value) -> Vec<ToolCall> {
    list.as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    let function = &c["function"];
                    call(function["name"].as_str().unwrap_or("?"), &function["arguments"])
                })
                .collect()
        })
        .unwrap_or_default()
}

fn call(name: &str, arguments: &Value) -> ToolCall {
    ToolCall {
        name: name.to_string(),
        target: summarize(arguments),
    }
}

/// What a call acted on: the values of its telling arguments (a command, a
/// URL, a query), else its arguments as JSON; one line, at most
/// `MAX_TARGET` characters.
pub fn summarize(arguments: &Value) -> String {
    let parsed;
    let arguments = match arguments.as_str().map(serde_json::from_str::<Value>) {
        Some(Ok(value)) => {
            parsed = value;
            &parsed
        }
        _ => arguments,
    };
    let telling: Vec<&str> = TARGET_KEYS
        .iter()
        .filter_map(|key| arguments.get(*key).and_then(Value::as_str))
        .collect();
    let text = if telling.is_empty() {
        arguments.to_string()
    } else {
        telling.join(" ")
    };
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_TARGET) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

/// `text` with every secret replaced by `[secret]`; secrets shorter than 8
/// bytes are not looked for (they would match ordinary words).
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        text = text.replace(secret.as_str(), "[secret]");
    }
    text
}

/// The values of an agent's secret files: each `NAME=VALUE` of its env
/// file, and every other file's content.
pub fn secrets_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut secrets = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        if entry.file_name() == "env" {
            secrets.extend(env_entries(&text).map(|(_, value)| value.trim().to_string()));
        } else {
            secrets.push(text.trim().to_string());
        }
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(dir: &Path, name: &str, schema: &str) -> (std::path::PathBuf, rusqlite::Connection) {
        let path = dir.join(name);
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(&format!("PRAGMA journal_mode=WAL; {schema}"))
            .unwrap();
        (path, connection)
    }

    #[test]
    fn hermes_calls_are_read_once_from_a_live_wal_database() {
        let dir = tempfile::tempdir().unwrap();
        let (path, live) = sqlite(
            dir.path(),
            "state.db",
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, role TEXT, content TEXT, tool_calls TEXT);",
        );
        let calls = r#"[{"type":"function","function":{"name":"terminal","arguments":"{\"command\": \"echo computed 42001\"}"}}]"#;
        live.execute(
            "INSERT INTO messages (role, content, tool_calls) VALUES ('user', 'run code', NULL), ('assistant', '', ?1)",
            [calls],
        )
        .unwrap();
        // The agent keeps its connection open: the rows are in the WAL.
        assert!(dir.path().join("state.db-wal").exists());
        let mut cursor = Cursor::default();
        let found = read_new(ToolLogFormat::HermesMessages, &path, &mut cursor).unwrap();
        assert_eq!(
            found,
            vec![ToolCall {
                name: "terminal".into(),
                target: "echo computed 42001".into()
            }]
        );
        assert_eq!(cursor.row, 2);
        assert!(
            read_new(ToolLogFormat::HermesMessages, &path, &mut cursor)
                .unwrap()
                .is_empty()
        );
        // The warden made no file beside the agent's.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["state.db", "state.db-shm", "state.db-wal"]);
    }

    #[test]
    fn openclaw_calls_come_from_json_and_compressed_events() {
        let dir = tempfile::tempdir().unwrap();
        let (path, live) = sqlite(
            dir.path(),
            "agent.sqlite",
            "CREATE TABLE transcript_events (session_id TEXT NOT NULL, seq INTEGER NOT NULL, event_json TEXT, \
             created_at INTEGER NOT NULL, event_zstd BLOB, PRIMARY KEY (session_id, seq));",
        );
        let browse = r#"{"type":"message","message":{"role":"assistant","content":[{"type":"toolCall","id":"c1","name":"tool_call","arguments":{"id":"browser","args":{"action":"open","targetUrl":"http://web.rehearsal.test/index.html"}}}]}}"#;
        let exec = r#"{"type":"message","message":{"role":"assistant","content":[{"type":"text","text":"ok"},{"type":"toolCall","id":"c2","name":"exec","arguments":{"command":"ls /"}}]}}"#;
        let compressed = zstd::encode_all(exec.as_bytes(), 3).unwrap();
        live.execute("INSERT INTO transcript_events VALUES ('s', 1, ?1, 0, NULL)", [browse])
            .unwrap();
        live.execute(
            "INSERT INTO transcript_events VALUES ('s', 2, NULL, 0, ?1)",
            [compressed],
        )
        .unwrap();
        live.execute(
            "INSERT INTO transcript_events VALUES ('s', 3, '{\"type\":\"message\",\"message\":{\"role\":\"user\",\"content\":\"hi\"}}', 0, NULL)",
            [],
        )
        .unwrap();
        let mut cursor = Cursor::default();
        let found = read_new(ToolLogFormat::OpenclawTranscript, &path, &mut cursor).unwrap();
        assert_eq!(
            found,
            vec![
                ToolCall {
                    name: "browser".into(),
                    target: "open http://web.rehearsal.test/index.html".into()
                },
                ToolCall {
                    name: "exec".into(),
                    target: "ls /".into()
                }
            ]
        );
        assert_eq!(cursor.row, 3);
    }

    #[test]
    fn picoclaw_sessions_are_read_by_line_and_a_missing_directory_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = dir.path().join("sessions");
        let mut cursor = Cursor::default();
        assert!(
            read_new(ToolLogFormat::PicoclawSessions, &sessions, &mut cursor)
                .unwrap()
                .is_empty()
        );
        fs::create_dir(&sessions).unwrap();
        let call = r#"{"role":"assistant","content":"","tool_calls":[{"id":"c","type":"function","function":{"name":"exec","arguments":"{\"action\":\"run\",\"command\":\"gh --version\"}"}}]}"#;
        fs::write(
            sessions.join("a.jsonl"),
            format!("{{\"role\":\"user\",\"content\":\"run gh\"}}\n{call}\n"),
        )
        .unwrap();
        fs::write(sessions.join("a.meta.json"), "{}").unwrap();
        let found = read_new(ToolLogFormat::PicoclawSessions, &sessions, &mut cursor).unwrap();
        assert_eq!(
            found,
            vec![ToolCall {
                name: "exec".into(),
                target: "run gh --version".into()
            }]
        );
        assert_eq!(cursor.lines["a.jsonl"], 2);
        fs::write(
            sessions.join("a.jsonl"),
            format!("{{\"role\":\"user\",\"content\":\"run gh\"}}\n{call}\n{call}\n"),
        )
        .unwrap();
        assert_eq!(
            read_new(ToolLogFormat::PicoclawSessions, &sessions, &mut cursor)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn targets_are_one_short_line_without_secrets() {
        let long = "x".repeat(300);
        let target = summarize(&serde_json::json!({ "command": format!("echo a\nb {long}") }));
        assert!(target.starts_with("echo a b xxx"), "{target}");
        assert_eq!(target.chars().count(), MAX_TARGET + 1);
        assert_eq!(summarize(&serde_json::json!({ "n": 1 })), r#"{"n":1}"#);

        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("env"), "GH_TOKEN=ghp_0123456789abcdef\nSHORT=abc\n").unwrap();
        fs::write(dir.path().join("matrix-token"), "syt_secret_token_value\n").unwrap();
        let secrets = secrets_in(dir.path());
        assert_eq!(
            redact(
                "curl -H 'Authorization: token ghp_0123456789abcdef' -d syt_secret_token_value abc",
                &secrets
            ),
            "curl -H 'Authorization: token [secret]' -d [secret] abc"
        );
    }
}
