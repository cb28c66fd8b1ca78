//! Hostile values in every string of the spec: each is refused at its own
//! file:line:column, or lands inert in every generated file.
//!
//! The fixture (`fixtures/hostile/appliance.toml`) sets every key of the
//! schema (a test below proves it against the schema itself), writes every
//! string as a `"..."` literal and quotes every map key, so "every string
//! leaf" is "every `"..."` literal in it": a field added to the schema is
//! covered once the fixture sets it, and the fixture must set it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use agent_appliance::common::diag::SourceFile;

use crate::support::{appliance, assert_contains, require_tool, stderr};

const FIXTURE: &str = include_str!("fixtures/hostile/appliance.toml");

/// What a string from the spec could use to escape where it lands: Nix
/// strings and comments, shell, nft, squid, YAML, JSON, systemd, INI, and
/// the terminal that shows errors (an ANSI escape, a bidi override, a
/// Unicode line separator).
const HOSTILE: &[&str] = &[
    "a\nb = 1",
    "a\"b",
    "a${b}",
    "a''b",
    "a\\b",
    "a;b",
    "a$(id)b",
    "a #b",
    "a}b",
    "a\u{1b}[31mb",
    "a\u{202e}b",
    "a\u{2028}b",
];

/// Stands in for a hostile value in the baseline a generated tree is
/// compared with: accepted wherever the hostile value was (free text),
/// and, with its space, quoted wherever the hostile value would be (a TOML
/// or YAML key), so only a real change of structure differs.
const PLACEHOLDER: &str = "zq zq";

/// The probe key inserted into each table to learn the schema's keys there.
const PROBE: &str = "zzz-probe";

/// One `"..."` literal of the fixture: its content's byte range.
struct Literal {
    start: usize,
    end: usize,
}

/// Every string literal of the fixture outside comments. The fixture uses
/// no escapes, so a literal ends at the next `"`.
fn literals(text: &str) -> Vec<Literal> {
    let mut found = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if !line.trim_start().starts_with('#') {
            let mut quotes = line.match_indices('"').map(|(i, _)| offset + i);
            while let (Some(open), Some(close)) = (quotes.next(), quotes.next()) {
                found.push(Literal {
                    start: open + 1,
                    end: close,
                });
            }
        }
        offset += line.len();
    }
    found
}

/// `text` as the inside of a TOML basic string.
fn toml_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// (line, column) of a byte offset, counted as the CLI counts them.
fn location(text: &str, offset: usize) -> (usize, usize) {
    SourceFile {
        name: String::new(),
        text: text.to_string(),
    }
    .location(offset)
}

#[test]
fn the_fixture_sets_every_key_of_the_schema() {
    let root: toml::Table = toml::from_str(FIXTURE).unwrap();
    let mut keys: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    let map_keys = probe(&root, &[], "", &mut keys);
    // Every string value and every map key is one `"..."` literal, so the
    // hostile-value test, which substitutes literals, reaches them all.
    assert_eq!(
        literals(FIXTURE).len(),
        strings(&toml::Value::Table(root.clone())) + map_keys,
        "write every string of the fixture as a \"basic string\" without escapes, and quote every map key"
    );
    let mut missing = Vec::new();
    for (path, (schema, fixture)) in &keys {
        for key in schema.difference(fixture) {
            missing.push(format!("{path}.{key}"));
        }
    }
    assert!(
        missing.is_empty(),
        "the schema has keys tests/fixtures/hostile/appliance.toml does not set, so the hostile-value \
         test cannot cover them: {missing:?}"
    );
    assert!(keys.len() >= 10, "the probe found too few tables: {keys:?}");
}

/// Learns the schema's keys for the table at `path` by adding an unknown
/// key there: a struct that denies unknown fields answers with the list of
/// its keys; a map (hosts, agents, sizes) does not. Records, per table
/// (map keys written `*`), the schema's keys and the fixture's; returns how
/// many map keys (host, agent, room names...) it met.
fn probe(
    root: &toml::Table,
    path: &[String],
    shape: &str,
    keys: &mut BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
) -> usize {
    let mut probed = root.clone();
    let table = table_at(&mut probed, path);
    let written: BTreeSet<String> = table.keys().cloned().collect();
    table.insert(PROBE.into(), toml::Value::Integer(0));
    let text = toml::to_string(&probed).unwrap();
    let source = SourceFile {
        name: "probe.toml".into(),
        text,
    };
    let error = agent_appliance::generator::spec::parse(&source).expect_err("the probe key is never valid");
    let message = error.rendered.join("\n");
    let is_struct = message.contains(&format!("unknown field `{PROBE}`"));
    if is_struct {
        let expected = message.split(", expected").nth(1).unwrap_or_default();
        let schema: BTreeSet<String> = expected.split('`').skip(1).step_by(2).map(str::to_string).collect();
        let entry = keys
            .entry(if shape.is_empty() { "spec".into() } else { shape.into() })
            .or_default();
        entry.0.extend(schema);
        entry.1.extend(written.iter().cloned());
    }
    let current = table_at(&mut root.clone(), path).clone();
    let mut map_keys = if is_struct { 0 } else { current.len() };
    for (key, value) in &current {
        if value.is_table() {
            let mut child = path.to_vec();
            child.push(key.clone());
            let name = if is_struct { key.as_str() } else { "*" };
            let child_shape = if shape.is_empty() {
                name.to_string()
            } else {
                format!("{shape}.{name}")
            };
            map_keys += probe(root, &child, &child_shape, keys);
        }
    }
    map_keys
}

/// How many string values `value` holds, in tables and arrays.
fn strings(value: &toml::Value) -> usize {
    match value {
        toml::Value::String(_) => 1,
        toml::Value::Array(items) => items.iter().map(strings).sum(),
        toml::Value::Table(table) => table.values().map(strings).sum(),
        _ => 0,
    }
}

fn table_at<'a>(root: &'a mut toml::Table, path: &[String]) -> &'a mut toml::Table {
    let mut table = root;
    for key in path {
        table = table.get_mut(key).and_then(toml::Value::as_table_mut).unwrap();
    }
    table
}

/// How a hostile value is put into a literal: in place of it, or after it
/// (an SSH key's comment, a topic's end).
#[derive(Clone, Copy, Debug)]
enum Mode {
    Replace,
    Append,
}

fn substituted(literal: &Literal, mode: Mode, value: &str) -> (String, std::ops::Range<usize>) {
    let original = &FIXTURE[literal.start..literal.end];
    let content = match mode {
        Mode::Replace => value.to_string(),
        Mode::Append => format!("{original}{value}"),
    };
    let escaped = toml_escape(&content);
    let text = format!("{}{escaped}{}", &FIXTURE[..literal.start], &FIXTURE[literal.end..]);
    // The literal with its quotes.
    (text, literal.start - 1..literal.start + escaped.len() + 1)
}

/// The outcome of one spec, through the CLI's own pipeline in this process
/// (decode, parse, validate, render), which is what makes 1,200 cases take
/// seconds; [`cli_refuses`] runs the binary itself for one value per string.
enum Outcome {
    Refused(String),
    Generated(BTreeMap<String, Vec<u8>>),
}

fn generate(spec: &str) -> Outcome {
    use agent_appliance::{generator::model, generator::render, generator::spec};
    let checked = spec::decode("appliance.toml".into(), spec.as_bytes().to_vec())
        .and_then(|source| spec::parse(&source).and_then(|parsed| model::build(&source, &parsed)));
    match checked {
        Ok(appliance) => Outcome::Generated(
            render::render(&appliance).unwrap_or_else(|e| panic!("a valid spec failed to render: {e:#}")),
        ),
        Err(errors) => Outcome::Refused(errors.to_string()),
    }
}

/// `appliance generate` on `spec` exits 2 with `errors` and writes nothing.
fn cli_refuses(spec: &str, errors: &str) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("appliance.toml"), spec).unwrap();
    let output = appliance()
        .arg("generate")
        .current_dir(dir.path())
        .env_remove("APPLIANCE_SPEC")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_contains(stderr(&output), errors.lines().next().unwrap());
    assert!(
        !dir.path().join("generated").exists(),
        "a refused spec must write nothing"
    );
}

/// Whether some `error: appliance.toml:L:C:` line of `errors` points into
/// `range` of `text`.
fn points_into(errors: &str, text: &str, range: &std::ops::Range<usize>) -> bool {
    let (line, first) = location(text, range.start);
    let (end_line, last) = location(text, range.end - 1);
    assert_eq!(line, end_line, "an escaped literal is one line");
    errors.lines().any(|l| {
        let Some(rest) = l.strip_prefix("error: appliance.toml:") else {
            return false;
        };
        let mut parts = rest.splitn(3, ':');
        let (Some(l), Some(c)) = (parts.next(), parts.next()) else {
            return false;
        };
        l.parse() == Ok(line) && c.parse().is_ok_and(|c: usize| (first..=last).contains(&c))
    })
}

#[test]
fn hostile_values_in_every_string_are_refused_where_written_or_land_inert() {
    let tools = ["bash", "nft", "squid", "unshare"]
        .map(|tool| require_tool(tool, "parses each generated file with its format's own parser"));
    if tools.iter().any(Option::is_none) {
        return;
    }
    let literals = literals(FIXTURE);
    assert!(literals.len() > 40, "the fixture's literals were not found");
    let mut checker = Checker::default();
    let mut accepted = Vec::new();
    for literal in &literals {
        for mode in [Mode::Replace, Mode::Append] {
            let (baseline_spec, _) = substituted(literal, mode, PLACEHOLDER);
            let mut baseline = None;
            for value in HOSTILE {
                let (spec, range) = substituted(literal, mode, value);
                let what = format!(
                    "{value:?} ({mode:?}) in `{}` at {:?}",
                    &FIXTURE[literal.start..literal.end],
                    location(FIXTURE, literal.start)
                );
                match generate(&spec) {
                    Outcome::Refused(errors) => {
                        assert!(
                            points_into(&errors, &spec, &range),
                            "{what}: refused, but no error points into the value:\n{errors}"
                        );
                        if value == &HOSTILE[0] && matches!(mode, Mode::Replace) {
                            cli_refuses(&spec, &errors);
                        }
                    }
                    Outcome::Generated(files) => {
                        let baseline = baseline.get_or_insert_with(|| match generate(&baseline_spec) {
                            Outcome::Generated(files) => files,
                            Outcome::Refused(errors) => {
                                panic!("{what}: accepted, but `{PLACEHOLDER}` is not:\n{errors}")
                            }
                        });
                        checker.compare(&what, value, baseline, &files);
                        accepted.push(what);
                    }
                }
            }
        }
    }
    eprintln!("accepted and inert: {}\n{}", accepted.len(), accepted.join("\n"));
}

/// Parses generated files with their formats' real parsers, caching the
/// external ones by content.
#[derive(Default)]
struct Checker {
    parsed: BTreeSet<(String, Vec<u8>)>,
    /// Files identical to their baseline, already checked.
    seen: BTreeSet<(String, Vec<u8>)>,
}

impl Checker {
    /// Every file of the hostile tree parses, and has the baseline's
    /// structure with the hostile value where the placeholder was.
    fn compare(
        &mut self,
        what: &str,
        value: &str,
        baseline_files: &BTreeMap<String, Vec<u8>>,
        files: &BTreeMap<String, Vec<u8>>,
    ) {
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            baseline_files.keys().collect::<Vec<_>>(),
            "{what}: the hostile value changed which files are generated"
        );
        for (name, bytes) in files {
            let before = &baseline_files[name];
            // Where the value did not land, the file is checked once.
            if bytes == before && !self.seen.insert((name.clone(), bytes.clone())) {
                continue;
            }
            let text = String::from_utf8(bytes.clone()).unwrap();
            let base = String::from_utf8(before.clone()).unwrap();
            let extension = name.rsplit_once('.').map_or(name.as_str(), |(_, e)| e);
            match extension {
                "json" => {
                    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let base: serde_json::Value = serde_json::from_str(&base).unwrap();
                    assert_eq!(neutral(&parsed, value), base, "{what}: changes the JSON of {name}");
                }
                "yaml" | "yml" => {
                    let parsed: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
                    let base: serde_json::Value = serde_saphyr::from_str(&base).unwrap();
                    assert_eq!(neutral(&parsed, value), base, "{what}: changes the YAML of {name}");
                }
                "toml" => {
                    let parsed: serde_json::Value =
                        serde_json::to_value(toml::from_str::<toml::Table>(&text).unwrap()).unwrap();
                    let base: serde_json::Value =
                        serde_json::to_value(toml::from_str::<toml::Table>(&base).unwrap()).unwrap();
                    assert_eq!(neutral(&parsed, value), base, "{what}: changes the TOML of {name}");
                }
                // Shell, nftables and squid have no escaping we trust for
                // free text: a value accepted as free text must not reach
                // them at all. They parse all the same.
                "sh" | "nft" | "conf" => {
                    assert_eq!(text, base, "{what}: reaches {name}, a format free text must not reach");
                    self.parse_other(what, name, bytes);
                }
                // Digests of the other files.
                "SHA256SUMS" => {}
                other => panic!("{name}: no parser for `.{other}` files; add one to tests/hostile.rs"),
            }
        }
    }

    /// `bash -n`, `nft -c` and `squid -k parse`, once per distinct file.
    fn parse_other(&mut self, what: &str, name: &str, bytes: &[u8]) {
        if !self.parsed.insert((name.to_string(), bytes.to_vec())) {
            return;
        }
        let scratch = tempfile::tempdir().unwrap();
        let file = scratch.path().join("file");
        let text = String::from_utf8_lossy(bytes);
        let output = if name.ends_with(".sh") {
            fs::write(&file, bytes).unwrap();
            Command::new("bash").arg("-n").arg(&file).output().unwrap()
        } else if name.ends_with(".nft") {
            // The files are table bodies (`networking.nftables.tables.<name>.content`).
            let family = if name.ends_with("bridge.nft") { "bridge" } else { "inet" };
            // NixOS's own ruleset check puts `nobody` in place of squid's user
            // (`networking.nftables.preCheckRuleset`): this machine has no `squid`.
            let text = text.replace("meta skuid \"squid\"", "meta skuid \"nobody\"");
            fs::write(&file, format!("table {family} appliance_check {{\n{text}}}\n")).unwrap();
            // A network namespace of its own: `-c` changes nothing, and the
            // host's ruleset is not even read.
            let mut command = Command::new("unshare");
            if !rustix::process::geteuid().is_root() {
                command.arg("--map-root-user");
            }
            command.args(["--net", "nft", "-c", "-f"]).arg(&file).output().unwrap()
        } else if name.ends_with("egress-proxy.conf") {
            // NixOS runs squid as `squid`; Debian's build knows `proxy`.
            let config = text.replace("cache_effective_user squid", "cache_effective_user proxy");
            let config = runtime_files_of_the_proxy(&config, scratch.path());
            fs::write(&file, config).unwrap();
            Command::new("squid")
                .args(["-k", "parse", "-f"])
                .arg(&file)
                .output()
                .unwrap()
        } else {
            // resolv.conf: a list of nameserver lines, no parser to ask.
            return;
        };
        assert!(
            output.status.success(),
            "{what}: {name} does not parse:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// What the host makes at runtime and squid opens while parsing, in
/// `dir`: the appliance CA (modules/egress.nix makes it at first boot), the
/// certificate generator at Debian's path (squid-openssl), and each
/// credential's include file, empty (the module writes it at squid's start).
fn runtime_files_of_the_proxy(config: &str, dir: &std::path::Path) -> String {
    use agent_appliance::generator::model::credentials::{CA_CERT, CA_KEY};
    if !config.contains(CA_CERT) {
        return config.to_string();
    }
    crate::support::squid::appliance_ca(&dir.join("ca.pem"), &dir.join("ca.key"));
    let mut text = config
        .replace(CA_CERT, dir.join("ca.pem").to_str().unwrap())
        .replace(CA_KEY, dir.join("ca.key").to_str().unwrap())
        .replace(
            agent_appliance::generator::render::egress::CERTGEN_MARKER,
            "/usr/lib/squid/security_file_certgen",
        );
    for line in config.lines().filter(|l| l.starts_with("include ")) {
        let path = line.trim_start_matches("include ");
        let empty = dir.join(std::path::Path::new(path).file_name().unwrap());
        fs::write(&empty, "").unwrap();
        text = text.replace(line, &format!("include {}", empty.display()));
    }
    text
}

/// A parsed document with the hostile value put back to the placeholder, in
/// strings and keys.
fn neutral(value: &serde_json::Value, hostile: &str) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(s.replace(hostile, PLACEHOLDER)),
        Value::Array(items) => Value::Array(items.iter().map(|i| neutral(i, hostile)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.replace(hostile, PLACEHOLDER), neutral(v, hostile)))
                .collect(),
        ),
        other => other.clone(),
    }
}
