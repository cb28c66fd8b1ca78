//! PicoClaw v0.2.9's `config.json` schema, written down by hand from its
//! `pkg/config` structs (no upstream code is copied here), and a checker
//! that applies it the way PicoClaw's loader does.
//!
//! The fast check of our PicoClaw configs, beside the real loader
//! (tests/agents.rs runs the PicoClaw `.ci/gobuild.sh` builds; this one
//! needs nothing and is stricter inside `settings`). Facts encoded, from reading
//! v0.2.9's `pkg/config` and running its loader on mutations:
//! - unknown keys are an error at every struct level ("config.json contains
//!   unknown field(s): ..."), and a wrong JSON type is an error;
//! - a channel's `settings` is decoded into the channel type's settings
//!   struct *leniently* (a misspelt key there is silently ignored), so the
//!   checker is stricter than PicoClaw: it rejects unknown `settings` keys;
//! - `version` must be 3 (other values: "unsupported config version");
//! - `model_list[].model` is required;
//! - `tools.skills.registries` takes a map keyed by registry name (or a
//!   list of `{name, ...}`; we write the map).
//!
//! Syntax: one key per line, children indented by two spaces. A type after
//! the colon is a leaf: `bool`, `int`, `float`, `string`, `strings` (array of
//! strings), `string-map` (object of strings). No type means a struct whose
//! fields follow; `[]` a list of such structs; `{}` an object of them keyed
//! by free names. `opaque` is a real PicoClaw key whose value is not written
//! down here: the checker refuses any value under it, so emitting one forces
//! whoever does to write its schema first.

use std::collections::BTreeMap;

use serde_json::Value;

pub const SCHEMA: &str = "
version: int
isolation
  enabled: bool
  expose_paths: opaque
agents
  defaults
    workspace: string
    restrict_to_workspace: bool
    allow_read_outside_workspace: bool
    provider: string
    model_name: string
    model_fallbacks: strings
    image_model: string
    image_model_fallbacks: strings
    max_tokens: int
    context_window: int
    temperature: float
    max_tool_iterations: int
    summarize_message_threshold: int
    summarize_token_percent: int
    max_media_size: int
    routing: opaque
    steering_mode: string
    max_parallel_turns: int
    subturn: opaque
    tool_feedback: opaque
    split_on_marker: bool
    context_manager: string
    context_manager_config: opaque
    turn_profile: opaque
    max_llm_retries: int
    llm_retry_backoff_secs: int
  list: opaque
  dispatch: opaque
session: opaque
evolution: opaque
channel_list: {}
  enabled: bool
  type: string
  allow_from: strings
  reasoning_channel_id: string
  group_trigger
    mention_only: bool
    prefixes: strings
  typing
    enabled: bool
  placeholder
    enabled: bool
    text: strings
  settings: settings
model_list: []
  model_name: string
  provider: string
  model: string
  api_base: string
  proxy: string
  fallbacks: strings
  auth_method: string
  connect_mode: string
  workspace: string
  rpm: int
  max_tokens_field: string
  request_timeout: int
  thinking_level: string
  tool_schema_transform: string
  streaming
    enabled: bool
  extra_body: opaque
  custom_headers: string-map
  api_keys: opaque
  enabled: bool
  user_agent: string
gateway
  host: string
  port: int
  hot_reload: bool
  log_level: string
events: opaque
hooks: opaque
tools
  allow_read_paths: strings
  allow_write_paths: strings
  filter_sensitive_data: bool
  filter_min_length: int
  web
    enabled: bool
    brave: opaque
    tavily: opaque
    sogou
      enabled: bool
      max_results: int
    duckduckgo
      enabled: bool
      max_results: int
    gemini: opaque
    perplexity: opaque
    searxng
      enabled: bool
      base_url: string
      max_results: int
    glm_search: opaque
    baidu_search: opaque
    provider: string
    prefer_native: bool
    proxy: string
    fetch_limit_bytes: int
    format: string
    private_host_whitelist: strings
  cron
    enabled: bool
    exec_timeout_minutes: int
    allow_command: bool
  exec
    enabled: bool
    enable_deny_patterns: bool
    allow_remote: bool
    custom_deny_patterns: strings
    custom_allow_patterns: strings
    timeout_seconds: int
  skills
    enabled: bool
    registries: {}
      enabled: bool
      base_url: string
      auth_token: opaque
    github: opaque
    max_concurrent_searches: int
    search_cache
      max_size: int
      ttl_seconds: int
  media_cleanup
    enabled: bool
    max_age_minutes: int
    interval_minutes: int
  mcp
    enabled: bool
    discovery: opaque
    max_inline_text_chars: int
    servers: opaque
  append_file: tool
  edit_file: tool
  find_skills: tool
  i2c: tool
  install_skill: tool
  list_dir: tool
  load_image: tool
  message: tool
  read_file
    enabled: bool
    mode: string
    max_read_file_size: int
  serial: tool
  send_file: tool
  send_tts: tool
  spawn: tool
  spawn_status: tool
  spi: tool
  subagent: tool
  web_fetch: tool
  write_file: tool
heartbeat
  enabled: bool
  interval: int
devices
  enabled: bool
  monitor_usb: bool
voice: opaque
build_info: opaque
";

/// `settings` of a `type = \"matrix\"` channel (`MatrixSettings`).
pub const MATRIX_SETTINGS: &str = "
homeserver: string
user_id: string
access_token: string
device_id: string
join_on_invite: bool
message_format: string
crypto_database_path: string
crypto_passphrase: string
";

/// Most tools are `ToolConfig`: just `enabled`.
const TOOL: &str = "enabled: bool";

#[derive(Debug)]
pub enum Node {
    Leaf(String),
    Struct(BTreeMap<String, Node>),
    List(BTreeMap<String, Node>),
    Map(BTreeMap<String, Node>),
}

/// Parses the indented schema text above.
pub fn parse(text: &str) -> BTreeMap<String, Node> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (l.len() - l.trim_start().len(), l.trim()))
        .collect();
    let (fields, rest) = parse_level(&lines, 0);
    assert!(rest.is_empty(), "schema indentation is broken near {rest:?}");
    fields
}

fn parse_level<'a>(
    mut lines: &'a [(usize, &'a str)],
    indent: usize,
) -> (BTreeMap<String, Node>, &'a [(usize, &'a str)]) {
    let mut fields = BTreeMap::new();
    while let Some(&(at, line)) = lines.first() {
        if at < indent {
            break;
        }
        assert_eq!(
            at, indent,
            "schema line `{line}` is indented by {at}, expected {indent}"
        );
        lines = &lines[1..];
        let (name, kind) = match line.split_once(':') {
            Some((name, kind)) => (name.trim(), kind.trim()),
            None => (line, ""),
        };
        let node = match kind {
            "" | "[]" | "{}" => {
                let (children, rest) = parse_level(lines, indent + 2);
                lines = rest;
                match kind {
                    "" => Node::Struct(children),
                    "[]" => Node::List(children),
                    _ => Node::Map(children),
                }
            }
            "tool" => Node::Struct(parse(TOOL)),
            leaf => Node::Leaf(leaf.to_string()),
        };
        assert!(
            fields.insert(name.to_string(), node).is_none(),
            "`{name}` twice in the schema"
        );
    }
    (fields, lines)
}

/// Every way `config` departs from the schema, as `path: problem` lines.
pub fn check(config: &Value) -> Vec<String> {
    let schema = parse(SCHEMA);
    let mut problems = Vec::new();
    check_struct(&schema, config, "", &mut problems);
    if config.get("version") != Some(&Value::from(3)) {
        problems.push("version: unsupported config version (PicoClaw v0.2.9 reads 3)".into());
    }
    if let Some(models) = config.get("model_list").and_then(Value::as_array) {
        for (i, model) in models.iter().enumerate() {
            if model.get("model").and_then(Value::as_str).is_none_or(str::is_empty) {
                problems.push(format!("model_list[{i}]: model is required"));
            }
        }
        // PicoClaw only notices a dangling model name at the first message.
        if let Some(name) = config.pointer("/agents/defaults/model_name").and_then(Value::as_str)
            && !models
                .iter()
                .any(|m| m.get("model_name").and_then(Value::as_str) == Some(name))
        {
            problems.push(format!("agents.defaults.model_name: `{name}` is not in model_list"));
        }
    }
    problems
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn check_struct(fields: &BTreeMap<String, Node>, value: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        problems.push(format!("{path}: expected an object"));
        return;
    };
    for (key, value) in object {
        let here = join(path, key);
        match fields.get(key) {
            None => problems.push(format!("{here}: unknown field")),
            Some(node) => check_node(node, value, &here, object, problems),
        }
    }
}

fn check_node(
    node: &Node,
    value: &Value,
    path: &str,
    parent: &serde_json::Map<String, Value>,
    problems: &mut Vec<String>,
) {
    match node {
        Node::Struct(fields) => check_struct(fields, value, path, problems),
        Node::List(fields) => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_struct(fields, item, &format!("{path}[{i}]"), problems);
                }
            }
            None => problems.push(format!("{path}: expected a list")),
        },
        Node::Map(fields) => match value.as_object() {
            Some(entries) => {
                for (key, entry) in entries {
                    check_struct(fields, entry, &join(path, key), problems);
                }
            }
            None => problems.push(format!("{path}: expected an object")),
        },
        Node::Leaf(kind) => {
            let ok = match kind.as_str() {
                "bool" => value.is_boolean(),
                "int" => value.is_i64() || value.is_u64(),
                "float" => value.is_number(),
                "string" => value.is_string(),
                "strings" => value.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                "string-map" => value.as_object().is_some_and(|o| o.values().all(Value::is_string)),
                "settings" => {
                    match parent.get("type").and_then(Value::as_str) {
                        Some("matrix") => check_struct(&parse(MATRIX_SETTINGS), value, path, problems),
                        other => problems.push(format!(
                            "{path}: settings of channel type {other:?} are not written down"
                        )),
                    }
                    true
                }
                "opaque" => {
                    problems.push(format!(
                        "{path}: a real PicoClaw key whose schema is not written down in tests/agents/picoclaw_schema.rs; add it before emitting it"
                    ));
                    true
                }
                other => panic!("unknown leaf type `{other}` in the schema"),
            };
            if !ok {
                problems.push(format!("{path}: expected {kind}, got {value}"));
            }
        }
    }
}
