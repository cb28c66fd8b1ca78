//! The rehearsal's stand-in model server (tests/rehearsal/standin_model.py),
//! over real HTTP: both APIs, streamed and not, the scripted tool calls and
//! the request log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::ports::free_port;
use crate::support::{assert_contains, require_tool, root};

const MODEL: &str = "qwen3.5:27b-q4_K_M";

struct Standin {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn standin() -> Option<Standin> {
    let python = require_tool("python3", "the stand-in model server is a Python script")?;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let port = free_port();
    let child = Command::new(python)
        .arg(root().join("tests/rehearsal/standin_model.py"))
        .args(["--port", &port.to_string(), "--model", MODEL, "--log"])
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("failed to start the stand-in");
    let standin = Standin {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
        _dir: dir,
    };
    let started = Instant::now();
    while get(&standin, "/api/version").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the stand-in did not start"
        );
        sleep(Duration::from_millis(50));
    }
    Some(standin)
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build())
}

fn get(standin: &Standin, path: &str) -> Result<(u16, String), ureq::Error> {
    let response = agent().get(&format!("{}{path}", standin.url)).call()?;
    let status = response.status().as_u16();
    Ok((status, response.into_body().read_to_string()?))
}

fn post(standin: &Standin, path: &str, body: &Value) -> (u16, String) {
    let response = agent()
        .post(&format!("{}{path}", standin.url))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = response.status().as_u16();
    (status, response.into_body().read_to_string().unwrap())
}

fn tools(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}))
            .collect(),
    )
}

/// Ollama's NDJSON stream: the concatenated content and the tool calls.
fn ollama_stream(text: &str) -> (String, Vec<Value>) {
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["done"], json!(true), "{text}");
    let content = lines.iter().filter_map(|l| l["message"]["content"].as_str()).collect();
    let calls = lines
        .iter()
        .filter_map(|l| l["message"]["tool_calls"].as_array())
        .flatten()
        .cloned()
        .collect();
    (content, calls)
}

/// OpenAI's SSE stream: the concatenated content, the tool calls and the
/// finish reason.
fn openai_stream(text: &str) -> (String, Vec<Value>, String) {
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let delta = |c: &Value| c["choices"][0]["delta"].clone();
    let content = chunks
        .iter()
        .filter_map(|c| delta(c)["content"].as_str().map(String::from))
        .collect();
    let calls = chunks
        .iter()
        .filter_map(|c| delta(c)["tool_calls"].as_array().cloned())
        .flatten()
        .collect();
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str().map(String::from))
        .unwrap();
    (content, calls, finish)
}

fn log_entries(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn standin_lists_and_shows_its_models_and_refuses_others() {
    let Some(standin) = standin() else { return };
    let (status, tags) = get(&standin, "/api/tags").unwrap();
    assert_eq!(status, 200);
    let tags: Value = serde_json::from_str(&tags).unwrap();
    assert_eq!(tags["models"][0]["name"], json!(MODEL));
    let (_, models) = get(&standin, "/v1/models").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&models).unwrap()["data"][0]["id"],
        json!(MODEL)
    );
    let (status, show) = post(&standin, "/api/show", &json!({"model": MODEL}));
    assert_eq!(status, 200);
    let show: Value = serde_json::from_str(&show).unwrap();
    assert!(
        show["capabilities"].as_array().unwrap().contains(&json!("tools")),
        "{show}"
    );
    let (status, body) = post(&standin, "/api/chat", &json!({"model": "other:1b", "messages": []}));
    assert_eq!(status, 404, "{body}");
    assert_contains(&body, "stand-in");
}

/// An agent that folds messages which came in while it was busy into one
/// turn (PicoClaw's steering, seen in the bench's load round) gets an
/// answer to each, as from a model: every tag of the turn, once, in order;
/// an earlier, answered turn's tag is not repeated.
#[test]
fn standin_answers_every_tag_of_a_turn_of_several_messages() {
    let Some(standin) = standin() else { return };
    let messages = json!([
        {"role": "user", "content": "first tag-old1"},
        {"role": "assistant", "content": "[stand-in] model x answers tag-old1"},
        {"role": "user", "content": "load mention tag-a1, please answer"},
        {"role": "user", "content": "load mention tag-b2, please answer"},
        {"role": "user", "content": "again tag-a1"}
    ]);
    let (_, text) = post(&standin, "/api/chat", &json!({"model": MODEL, "messages": messages}));
    assert_eq!(
        ollama_stream(&text).0,
        format!("[stand-in] model {MODEL} answers tag-a1, tag-b2")
    );
}

#[test]
fn standin_answers_a_plain_message_on_both_apis_streamed_and_not() {
    let Some(standin) = standin() else { return };
    let messages = json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi tag-abc1"}]);
    let want = format!("[stand-in] model {MODEL} answers tag-abc1");
    let (_, text) = post(&standin, "/api/chat", &json!({"model": MODEL, "messages": messages}));
    assert_eq!(ollama_stream(&text).0, want);
    let (_, text) = post(
        &standin,
        "/api/chat",
        &json!({"model": MODEL, "messages": messages, "stream": false}),
    );
    let whole: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(whole["message"]["content"], json!(want));
    assert_eq!(whole["done"], json!(true));
    let (_, text) = post(
        &standin,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": messages, "stream": true, "stream_options": {"include_usage": true}}),
    );
    let (content, calls, finish) = openai_stream(&text);
    assert_eq!(
        (content.as_str(), calls.len(), finish.as_str()),
        (want.as_str(), 0, "stop")
    );
    assert_contains(&text, "\"usage\"");
    let (_, text) = post(
        &standin,
        "/v1/chat/completions",
        &json!({"model": MODEL, "messages": messages}),
    );
    let whole: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(whole["choices"][0]["message"]["content"], json!(want));
}

#[test]
fn standin_runs_code_through_the_terminal_tool_and_reports_its_output() {
    let Some(standin) = standin() else { return };
    let user = json!({"role": "user", "content": "@casper:magi run code tag-x"});
    let body =
        json!({"model": MODEL, "stream": true, "messages": [user], "tools": tools(&["browser_navigate", "terminal"])});
    let (_, text) = post(&standin, "/v1/chat/completions", &body);
    let (_, calls, finish) = openai_stream(&text);
    assert_eq!(finish, "tool_calls");
    assert_eq!(calls[0]["function"]["name"], json!("terminal"));
    let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    let command = args["command"].as_str().unwrap();
    assert!(
        !command.contains("42001"),
        "the output must come from running it: {command}"
    );
    // The tool result comes back: the reply carries its output verbatim.
    let result = json!({"output": "computed 42001", "exit_code": 0, "error": null}).to_string();
    let messages = json!([user, {"role": "assistant", "content": null, "tool_calls": [calls[0]]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": result}]);
    let body = json!({"model": MODEL, "stream": true, "messages": messages, "tools": tools(&["terminal"])});
    let (content, calls, _) = openai_stream(&post(&standin, "/v1/chat/completions", &body).1);
    assert!(calls.is_empty());
    assert!(content.ends_with("its output: computed 42001"), "{content}");
    // Without a code tool it says so instead of calling one.
    let body = json!({"model": MODEL, "stream": false, "messages": [user]});
    let text = post(&standin, "/v1/chat/completions", &body).1;
    assert_contains(&text, "no code tool was offered");
}

#[test]
fn standin_recalls_a_fact_only_from_the_conversation_it_is_sent() {
    let Some(standin) = standin() else { return };
    let told = json!({"role": "user", "content": "@casper:magi remember word-a1 is fact-b2 tag-r1"});
    let answer = json!({"role": "assistant", "content": "[stand-in] model x answers tag-r1"});
    let asked = json!({"role": "user", "content": "@casper:magi recall word-a1 tag-r2"});
    let body = json!({"model": MODEL, "stream": false, "messages": [told, answer, asked]});
    let text = post(&standin, "/v1/chat/completions", &body).1;
    assert!(
        text.contains("recalls word-a1 is fact-b2 (from earlier turns)"),
        "{text}"
    );
    // The same question without the earlier turns: nothing to recall.
    let body = json!({"model": MODEL, "stream": false, "messages": [asked]});
    let text = post(&standin, "/v1/chat/completions", &body).1;
    assert!(text.contains("has no memory of word-a1"), "{text}");
    // Nor from a system prompt that does not carry it.
    let system = json!({"role": "system", "content": "You are casper. word-a1 is unknown"});
    let body = json!({"model": MODEL, "stream": false, "messages": [system, asked]});
    let text = post(&standin, "/v1/chat/completions", &body).1;
    assert!(text.contains("has no memory of word-a1"), "{text}");
}

/// Hermes' `memory` tool: told a fact, the stand-in stores it with the
/// tool; asked later with only a system prompt, it finds it there, where
/// Hermes puts MEMORY.md (its block as tools/memory_tool.py renders it).
#[test]
fn standin_stores_a_fact_with_the_memory_tool_and_recalls_it_from_the_system_prompt() {
    let Some(standin) = standin() else { return };
    let system = json!({"role": "system", "content": "You are casper."});
    let told = json!({"role": "user", "content": "@casper:magi remember word-a1 is fact-b2 tag-r1"});
    let offered = tools(&["memory", "terminal"]);
    let body = json!({"model": MODEL, "stream": true, "messages": [system, told], "tools": offered});
    let (_, calls, finish) = openai_stream(&post(&standin, "/v1/chat/completions", &body).1);
    assert_eq!(finish, "tool_calls");
    assert_eq!(calls[0]["function"]["name"], json!("memory"));
    let args: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        args,
        json!({"action": "add", "target": "memory", "content": "word-a1 is fact-b2"})
    );
    let result = json!({"success": true, "done": true, "target": "memory", "message": "Entry added."}).to_string();
    let messages = json!([system, told, {"role": "assistant", "content": null, "tool_calls": [calls[0]]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": result}]);
    let body = json!({"model": MODEL, "stream": false, "messages": messages, "tools": offered});
    let text = post(&standin, "/v1/chat/completions", &body).1;
    assert_contains(&text, "stored word-a1 is fact-b2 in its memory");
    assert_contains(&text, "Entry added.");

    let bar = "\u{2550}".repeat(46);
    let remembered = json!({"role": "system", "content": format!(
        "You are casper.\n\n{bar}\nMEMORY (your personal notes) [0% \u{2014} 18/2,200 chars]\n{bar}\nword-a1 is fact-b2"
    )});
    let asked = json!({"role": "user", "content": "@casper:magi recall word-a1 tag-r2"});
    let body = json!({"model": MODEL, "stream": false, "messages": [remembered, asked], "tools": offered});
    let text = post(&standin, "/v1/chat/completions", &body).1;
    assert_contains(&text, "recalls word-a1 is fact-b2 (from its system prompt)");

    // No memory tool offered: it says so and stores nothing.
    let body = json!({"model": MODEL, "stream": false, "messages": [told], "tools": tools(&["terminal"])});
    let text = post(&standin, "/v1/chat/completions", &body).1;
    assert_contains(&text, "was told word-a1 is fact-b2 (no memory tool was offered)");
}

/// Feeds `results` to the stand-in as OpenClaw would, one per browser call
/// it makes; returns the actions it called and its final answer.
fn browse_with(standin: &Standin, results: &[&str]) -> (Vec<String>, String) {
    let offered = tools(&["exec", "tool_call", "tool_search"]);
    let mut messages = vec![
        json!({"role": "user", "content": "@melchior:magi read page http://10.88.0.5/ tag-y"}),
        json!({"role": "user", "content": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\nctx\n<<<END_OPENCLAW_INTERNAL_CONTEXT>>>"}),
    ];
    let mut actions = Vec::new();
    for result in results {
        let body = json!({"model": MODEL, "messages": messages, "tools": offered});
        let (_, calls) = ollama_stream(&post(standin, "/api/chat", &body).1);
        assert_eq!(calls.len(), 1, "{messages:?}");
        let function = &calls[0]["function"];
        assert_eq!(
            (function["name"].clone(), function["arguments"]["id"].clone()),
            (json!("tool_call"), json!("browser"))
        );
        actions.push(function["arguments"]["args"]["action"].as_str().unwrap().to_string());
        messages.push(json!({"role": "assistant", "content": "", "tool_calls": calls}));
        messages.push(json!({"role": "tool", "content": result}));
        // OpenClaw repeats its context block after each tool result.
        messages.push(messages[1].clone());
    }
    let body = json!({"model": MODEL, "messages": messages, "tools": offered, "stream": false});
    let reply: Value = serde_json::from_str(&post(standin, "/api/chat", &body).1).unwrap();
    (actions, reply["message"]["content"].as_str().unwrap().to_string())
}

const OPENED: &str = r#"{"targetId": "T", "title": "", "url": "http://10.88.0.5/"}"#;
const SNAPSHOT: &str = r#"- heading "Rehearsal" [level=1]"#;
const TABS: &str = r#"{"text": "{\n  \"tabs\": [{\"title\": \"Test page 9\", \"url\": \"http://10.88.0.5/\"}]}"}"#;
/// What OpenClaw 2026.9.6 returned when `open` outlasted its 15 s (seen in
/// the rehearsal: Chromium's first start in gVisor on a loaded machine).
const TIMED_OUT: &str = "[tool error] {\"status\": \"error\", \"error\": \"timed out. Run `openclaw browser doctor` and check the Gateway logs. This may be a transient browser error. Retry the browser tool once. If the same error persists, use an alternative approach\"}";

#[test]
fn standin_browses_through_openclaw_tool_search_and_reports_the_title() {
    let Some(standin) = standin() else { return };
    let (actions, text) = browse_with(&standin, &[OPENED, SNAPSHOT, TABS]);
    assert_eq!(actions, ["open", "snapshot", "tabs"]);
    assert!(text.ends_with("page title: Test page 9"), "{text}");
}

/// The tool asks for one retry on a timeout: the stand-in retries once,
/// and not a second time.
#[test]
fn standin_retries_a_timed_out_browser_call_once() {
    let Some(standin) = standin() else { return };
    let (actions, text) = browse_with(&standin, &[TIMED_OUT, OPENED, SNAPSHOT, TABS]);
    assert_eq!(actions, ["open", "open", "snapshot", "tabs"]);
    assert!(text.ends_with("page title: Test page 9"), "{text}");
    let (actions, _) = browse_with(&standin, &[TIMED_OUT, TIMED_OUT, SNAPSHOT]);
    assert_eq!(actions, ["open", "open", "snapshot"]);
}

#[test]
fn standin_loop_replies_name_the_next_agent_and_the_log_names_the_model() {
    let Some(standin) = standin() else { return };
    let body = json!({"model": MODEL, "stream": false, "tools": tools(&["terminal"]),
        "messages": [{"role": "user", "content": "@melchior:magi loop_melchior_casper tag-z"}]});
    let reply: Value = serde_json::from_str(&post(&standin, "/api/chat", &body).1).unwrap();
    let text = reply["message"]["content"].as_str().unwrap();
    assert!(text.starts_with("[stand-in]"), "{text}");
    assert_contains(text, "@casper:magi, your turn: loop_casper_melchior");
    // Same request again: the full tools array is logged once per set.
    post(&standin, "/api/chat", &body);
    let entries: Vec<Value> = log_entries(&standin.log)
        .into_iter()
        .filter(|e| e["endpoint"] == json!("POST /api/chat"))
        .collect();
    assert_eq!(entries.len(), 2);
    for entry in &entries {
        assert_eq!(entry["model"], json!(MODEL));
        assert_eq!(entry["rule"], json!("loop"));
        assert!(entry["user_message"].as_str().unwrap().contains("tag-z"));
        assert_eq!(entry["standin"], json!(true));
    }
    assert!(entries[0].get("tools_full").is_some() && entries[1].get("tools_full").is_none());
}
