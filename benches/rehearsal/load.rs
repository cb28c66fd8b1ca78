//! Issue 25, item 5: load, nothing lost. Two humans each send
//! `BENCH_LOAD_MENTIONS` mentions (default 100), spread round-robin over
//! the agents within `BENCH_LOAD_SPREAD_S` seconds (default 60), each
//! carrying a unique `tag-…` token that the stand-in model echoes; then the
//! bench waits (bounded) until every mention has a reply and counts, per
//! agent, mentions answered once, twice or more, or not at all, and the
//! latency from the mention's to the first reply's `origin_server_ts`.
//! A second round does the same while one agent (`BENCH_LOAD_KILL`,
//! default melchior) is `docker kill -s KILL`ed halfway through the
//! sending and started again as its unit would be.
//!
//! The humans: @gendo and the bench spec's second admin (`spec.rs`), both
//! in the room and named in every agent's allowlist. A third account, not
//! in the spec, sends `BENCH_LOAD_STRANGER` mentions (default 20) in the
//! same minute: registered the way the rehearsal's warden step makes its
//! stranger (Synapse's registration shared secret, invited by the
//! appliance's account); agents must ignore them, and the bench counts
//! that they do, under the same load.
//!
//! Rate limits: the generated Synapse settings keep Synapse's default
//! `rc_message` (0.2 messages/s, burst 10) for humans; the bootstrap gives
//! each agent an override (2/s, burst 30). 100 mentions in a minute is more
//! than a human's default allows, so unless `BENCH_LOAD_LIFT=0` the bench
//! lifts both humans' limits through Synapse's admin API (as an operator
//! could); either way its client waits out every 429 for `retry_after_ms`
//! and counts them. The agents' own 429s are counted from Synapse's access
//! log.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::time::{Duration, Instant};

use agent_appliance::on_host::bootstrap::client::{mention, segment};
use agent_appliance::on_host::bootstrap::ratelimit;
use agent_appliance::schema::plan::RateLimit;
use serde_json::{Value, json};

use crate::hub::Hub;
use crate::matrix::Member;
use crate::{docker_ok, env_number, load_average, now_ms};

/// How one load round is set up, from the environment.
pub struct Settings {
    /// Mentions each human in the spec sends.
    pub mentions: usize,
    /// Mentions the account outside the spec sends.
    pub stranger_mentions: usize,
    pub spread: Duration,
    /// How long the bench waits for replies after the last mention.
    pub wait: Duration,
    /// The agent killed in the second round; none: no second round.
    pub kill: Option<String>,
    pub lift: bool,
}

impl Settings {
    pub fn from_env() -> Settings {
        let kill = std::env::var("BENCH_LOAD_KILL").unwrap_or_else(|_| "melchior".into());
        Settings {
            mentions: env_number("BENCH_LOAD_MENTIONS", 100),
            stranger_mentions: env_number("BENCH_LOAD_STRANGER", 20),
            spread: Duration::from_secs(env_number("BENCH_LOAD_SPREAD_S", 60) as u64),
            wait: Duration::from_secs(env_number("BENCH_LOAD_WAIT_S", 300) as u64),
            kill: (!kill.is_empty() && kill != "none").then_some(kill),
            lift: std::env::var("BENCH_LOAD_LIFT").map_or(true, |v| v != "0"),
        }
    }
}

/// A human account sending mentions.
struct Sender {
    user_id: String,
    token: String,
    /// Whether the spec names it (agents answer it); else they must not.
    in_spec: bool,
    /// How many mentions it sends in a round.
    mentions: usize,
}

/// One mention sent.
struct Sent {
    token: String,
    agent: String,
    sender: String,
    expected: bool,
    event: Option<String>,
}

/// A human of the spec: logged in with its initial password, in the room.
fn spec_human(hub: &Hub, localpart: &str, settings: &Settings) -> Sender {
    let server = &hub.appliance.matrix.server_name;
    Sender {
        user_id: format!("@{localpart}:{server}"),
        token: Member::login(hub, localpart, &format!("#magi:{server}")).token,
        in_spec: true,
        mentions: settings.mentions,
    }
}

/// `@visitor`: not in the spec (warden::invited_human).
fn stranger(hub: &Hub, admin: &Member, settings: &Settings) -> Sender {
    Sender {
        user_id: format!("@visitor:{}", hub.appliance.matrix.server_name),
        token: crate::warden::invited_human(hub, admin, "visitor"),
        in_spec: false,
        mentions: settings.stranger_mentions,
    }
}

/// No message rate limit for `user` (Synapse's admin API, with the
/// appliance's account, a server admin).
pub fn lift_rate_limit(hub: &Hub, user: &str) {
    let appliance = crate::warden::host_secret(hub, "_host/bootstrap/matrix-token");
    let user = user.to_string();
    let none = RateLimit {
        messages_per_second: 0,
        burst_count: 0,
    };
    hub.netns.run(move || {
        let client = crate::client_within(Duration::from_secs(60));
        ratelimit::ensure(&client, &appliance, &user, none)
            .unwrap_or_else(|e| panic!("lift {user}'s rate limit: {e:#}"));
    });
}

/// A plain message (no mention) whose event marks where a round starts.
fn marker(hub: &Hub, admin: &Member, text: &str) -> String {
    admin.send(hub, json!({"msgtype": "m.text", "body": text}))
}

/// Every `m.room.message` after `anchor`, oldest first (paged).
pub fn messages_since(hub: &Hub, member: &Member, anchor: &str) -> Vec<Value> {
    let token = member.token.clone();
    let room = member.room_id.clone();
    let anchor = anchor.to_string();
    hub.netns.run(move || {
        let client = crate::client_within(Duration::from_secs(60));
        let context = client
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{}/context/{}?limit=0",
                    segment(&room),
                    segment(&anchor)
                ),
                Some(&token),
            )
            .unwrap();
        assert!(context.ok(), "context: {}", context.describe());
        let mut from = context.str("end").unwrap_or_default().to_string();
        let mut out = Vec::new();
        loop {
            let page = client
                .get(
                    &format!(
                        "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=500&from={}",
                        segment(&room),
                        segment(&from)
                    ),
                    Some(&token),
                )
                .unwrap();
            assert!(page.ok(), "messages: {}", page.describe());
            let chunk = page.body["chunk"].as_array().cloned().unwrap_or_default();
            if chunk.is_empty() {
                break;
            }
            out.extend(chunk.into_iter().filter(|e| e["type"] == "m.room.message"));
            match page.str("end") {
                Some(end) if end != from => from = end.to_string(),
                _ => break,
            }
        }
        out
    })
}

/// The `tag-…` tokens in a message body, each once.
fn tokens(body: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find("tag-") {
        let after = &rest[at + 4..];
        let end = after.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(after.len());
        let token = format!("tag-{}", &after[..end]);
        if end > 0 && !out.contains(&token) {
            out.push(token);
        }
        rest = &after[end..];
    }
    out
}

/// Threads sending one sender's mentions.
const SEND_THREADS: usize = 6;

/// One thread's share of a sender's mentions, `(index, agent's user id,
/// token)`, each sent at `start + interval * index`; returns each index's
/// event id (none: refused) and the 429s waited out.
fn send_lane(
    token: &str,
    room: &str,
    messages: &[(usize, String, String)],
    start: Instant,
    interval: Duration,
) -> (Vec<(usize, Option<String>)>, u32) {
    let client = crate::client_within(Duration::from_secs(3600));
    let mut events = Vec::new();
    for (i, agent, tag) in messages {
        let at = start + interval * *i as u32;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let content = mention(agent, &format!("load mention {tag}, please answer"));
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/bench-{tag}",
            segment(room)
        );
        let event = client
            .put(&path, Some(token), &content)
            .ok()
            .filter(|r| r.ok())
            .and_then(|r| r.str("event_id").map(String::from));
        events.push((*i, event));
    }
    (events, client.rate_limited())
}

/// Each sender's mentions, spread evenly over `spread`, round-robin over
/// `agents` (each sender starting at another agent), sent from its own
/// thread; a sender's 429s are waited out. Returns the mentions and, per
/// sender, its 429 count and how long its sending took.
fn send_round(
    hub: &Hub,
    room: &str,
    senders: &[Sender],
    agents: &[(String, String)],
    settings: &Settings,
    phase: char,
    during: impl FnOnce(),
) -> (Vec<Sent>, Vec<Value>) {
    let start = Instant::now() + Duration::from_millis(200);
    let plans: Vec<Vec<Sent>> = senders
        .iter()
        .enumerate()
        .map(|(h, sender)| {
            (0..sender.mentions)
                .map(|i| {
                    let (agent, _) = &agents[(i + h) % agents.len()];
                    Sent {
                        token: format!("tag-{phase}{h}n{i:04}"),
                        agent: agent.clone(),
                        sender: sender.user_id.clone(),
                        expected: sender.in_spec,
                        event: None,
                    }
                })
                .collect()
        })
        .collect();
    let user_of: HashMap<String, String> = agents.iter().cloned().collect();
    // Each sender's mentions go out from `SEND_THREADS` threads, each
    // taking every n-th one at its planned time: one thread falls behind
    // when a send takes longer than the interval (it did: ~1.5 s a send
    // under the hub's load, for an interval of 0.6 s).
    let results = std::thread::scope(|scope| {
        let handles: Vec<Vec<_>> = senders
            .iter()
            .zip(&plans)
            .map(|(sender, plan)| {
                (0..SEND_THREADS)
                    .map(|lane| {
                        let messages: Vec<(usize, String, String)> = plan
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| i % SEND_THREADS == lane)
                            .map(|(i, s)| (i, user_of[&s.agent].clone(), s.token.clone()))
                            .collect();
                        let token = sender.token.clone();
                        let room = room.to_string();
                        let interval = settings.spread / sender.mentions.max(1) as u32;
                        let netns = &hub.netns;
                        scope.spawn(move || netns.run(move || send_lane(&token, &room, &messages, start, interval)))
                    })
                    .collect()
            })
            .collect();
        during();
        handles
            .into_iter()
            .zip(senders)
            .map(|(lanes, sender)| {
                let mut events = vec![None; sender.mentions];
                let mut limited = 0;
                for lane in lanes {
                    let (sent, lane_limited) = lane.join().unwrap();
                    limited += lane_limited;
                    for (i, event) in sent {
                        events[i] = event;
                    }
                }
                (events, limited, start.elapsed().as_secs_f64())
            })
            .collect::<Vec<_>>()
    });
    let mut sent = Vec::new();
    let mut stats = Vec::new();
    for ((sender, plan), (events, limited, took)) in senders.iter().zip(plans).zip(results) {
        let failed = events.iter().filter(|e| e.is_none()).count();
        stats.push(json!({
            "user": sender.user_id,
            "in_spec": sender.in_spec,
            "sent": events.len() - failed,
            "send_failed": failed,
            "rate_limited_429": limited,
            "send_s": took,
        }));
        for (mut mention, event) in plan.into_iter().zip(events) {
            mention.event = event;
            sent.push(mention);
        }
    }
    (sent, stats)
}

/// Synapse's access log lines after `offset` bytes: 429 answers per
/// requester (`{@user:server…}`), and how many requests it logged (so that
/// no 429 means something).
fn rate_limited_since(hub: &Hub, offset: usize) -> (BTreeMap<String, usize>, usize) {
    let text = synapse_log_since(hub, offset);
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.contains("Processed request") && l.contains("B 429 \""))
    {
        *counts.entry(requester(line)).or_insert(0) += 1;
    }
    (counts, text.lines().filter(|l| l.contains("Processed request")).count())
}

/// Synapse's log after `offset` bytes.
fn synapse_log_since(hub: &Hub, offset: usize) -> String {
    let log = hub.synapse.as_ref().map(|s| s.log.clone());
    let text = log.and_then(|l| fs::read(l).ok()).unwrap_or_default();
    String::from_utf8_lossy(text.get(offset..).unwrap_or_default()).into_owned()
}

/// The requester of an access-log line (`{@user:server…}`), its user id.
fn requester(line: &str) -> String {
    line.split_once('{')
        .and_then(|(_, r)| r.split_once('}'))
        .map(|(r, _)| r.split('|').next().unwrap_or(r).to_string())
        .unwrap_or_default()
}

/// Synapse's default timeline limit for a `/sync` without a filter that
/// sets one (synapse/api/filtering.py): an incremental sync spanning more
/// events than this returns the newest ones with `limited: true`, and a
/// client that does not then fetch the rest (`/messages` back from
/// `prev_batch`) never sees the older ones.
const DEFAULT_TIMELINE_LIMIT: i64 = 10;

/// The room stream position of a `/sync` request's `since` token
/// (`s<position>_…`), from its logged request line.
fn since_position(line: &str) -> Option<i64> {
    let (_, rest) = line.split_once("since=s")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Per requester, its incremental `/sync`s in Synapse's access log after
/// `offset` bytes: how many, the largest number of events between one
/// and the next (the room stream positions of their `since` tokens, which
/// count every room's events, so an upper bound for one room), how many
/// spanned more than `DEFAULT_TIMELINE_LIMIT`, and whether it sends a
/// filter. Whether a sync dropped events depends on the filter.
fn sync_gaps_since(hub: &Hub, offset: usize) -> BTreeMap<String, Value> {
    let text = synapse_log_since(hub, offset);
    let mut positions: BTreeMap<String, (Vec<i64>, bool)> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.contains("Processed request") && l.contains("/_matrix/client/v3/sync?"))
    {
        let Some(position) = since_position(line) else {
            continue;
        };
        let entry = positions.entry(requester(line)).or_default();
        entry.0.push(position);
        entry.1 |= line.contains("filter=");
    }
    positions
        .into_iter()
        .map(|(requester, (mut at, filtered))| {
            at.sort_unstable();
            let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
            let summary = json!({
                "syncs": at.len(),
                "max_events_between": gaps.iter().max(),
                "over_default_timeline_limit": gaps.iter().filter(|g| **g > DEFAULT_TIMELINE_LIMIT).count(),
                "sends_filter": filtered,
            });
            (requester, summary)
        })
        .collect()
}

/// The warden's loop-breaker records after `offset` bytes of its audit
/// trail: (kind, detail) of each `loop.tripped` and `loop.lifted`.
fn loop_breaks_since(hub: &Hub, offset: usize) -> Vec<Value> {
    let text = fs::read(audit_path(hub)).unwrap_or_default();
    String::from_utf8_lossy(text.get(offset..).unwrap_or_default())
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"].as_str().is_some_and(|k| k.starts_with("loop.")))
        .map(|r| json!({"kind": r["kind"], "detail": r["detail"], "actor": r["actor"]}))
        .collect()
}

fn audit_path(hub: &Hub) -> std::path::PathBuf {
    hub.state_dir()
        .join(agent_appliance::on_host::warden::WARDEN_DIR)
        .join(agent_appliance::on_host::warden::AUDIT_FILE)
}

fn synapse_log_len(hub: &Hub) -> usize {
    hub.synapse
        .as_ref()
        .and_then(|s| fs::metadata(&s.log).ok())
        .map_or(0, |m| m.len() as usize)
}

fn percentile(sorted: &[f64], p: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// With `BENCH_LOAD_LOGS=DIR`: each agent's container log, Synapse's log and
/// the stand-in's request log at the end of a round, into DIR (`<round>-…`),
/// to trace what was lost; the hub's copies go with it.
fn keep_logs(hub: &Hub, agents: &[(String, String)], phase: char) {
    let Some(dir) = std::env::var_os("BENCH_LOAD_LOGS").map(std::path::PathBuf::from) else {
        return;
    };
    fs::create_dir_all(&dir).unwrap();
    for (agent, _) in agents {
        let logs = hub.daemon.docker(&["logs", "--timestamps", agent]);
        let mut text = logs.stdout;
        text.extend_from_slice(&logs.stderr);
        fs::write(dir.join(format!("{phase}-{agent}.log")), text).unwrap();
    }
    if let Some(synapse) = &hub.synapse {
        let _ = fs::copy(&synapse.log, dir.join(format!("{phase}-synapse.log")));
    }
    fs::write(dir.join(format!("{phase}-standin.jsonl")), hub.standin_log()).unwrap();
}

/// The kill in a round: which agent, and when (server-clock ms).
struct Kill {
    agent: String,
    killed_ms: i64,
    restarted_ms: i64,
}

/// Replies to `sent` among `messages`: token -> reply timestamps from the
/// mention's agent, and the mention's own timestamp.
fn match_replies(
    messages: &[Value],
    sent: &[Sent],
    user_of: &HashMap<String, String>,
) -> (HashMap<String, Vec<i64>>, HashMap<String, i64>) {
    let by_token: HashMap<&str, &Sent> = sent.iter().map(|s| (s.token.as_str(), s)).collect();
    let mut replies: HashMap<String, Vec<i64>> = HashMap::new();
    let mut mentioned: HashMap<String, i64> = HashMap::new();
    for event in messages {
        let body = event["content"]["body"].as_str().unwrap_or_default();
        let ts = event["origin_server_ts"].as_i64().unwrap_or_default();
        let sender = event["sender"].as_str().unwrap_or_default();
        for token in tokens(body) {
            let Some(mention) = by_token.get(token.as_str()) else {
                continue;
            };
            if sender == mention.sender {
                mentioned.insert(token, ts);
            } else if sender == user_of[&mention.agent] {
                replies.entry(token).or_default().push(ts);
            }
        }
    }
    (replies, mentioned)
}

/// One round: the marker, the sending (with `kill` halfway through), the
/// wait for replies, the counts.
fn round(
    hub: &Hub,
    admin: &Member,
    senders: &[Sender],
    agents: &[(String, String)],
    settings: &Settings,
    phase: char,
    kill: Option<&str>,
) -> Value {
    let user_of: HashMap<String, String> = agents.iter().cloned().collect();
    let load_before = load_average();
    let log_offset = synapse_log_len(hub);
    let audit_offset = fs::metadata(audit_path(hub)).map_or(0, |m| m.len() as usize);
    let anchor = marker(hub, admin, &format!("bench: load round {phase} starts"));
    let round_started_ms = now_ms();
    let mut killed: Option<Kill> = None;
    let (sent, sender_stats) = send_round(hub, &admin.room_id, senders, agents, settings, phase, || {
        let Some(agent) = kill else { return };
        std::thread::sleep(settings.spread / 2);
        let killed_ms = now_ms();
        docker_ok(hub, &["kill", "-s", "KILL", agent]);
        let stopped = Instant::now();
        while hub.is_running(agent) && stopped.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
        // What the unit does (Restart=always): the old container removed,
        // the same generated `docker run` again.
        let _ = hub.daemon.docker(&["rm", "-f", agent]);
        let sandbox = hub.sandboxes().into_iter().find(|s| s.name == agent).unwrap();
        hub.start_sandbox(&sandbox);
        eprintln!("bench: load: killed {agent} and started it again");
        killed = Some(Kill {
            agent: agent.to_string(),
            killed_ms,
            restarted_ms: now_ms(),
        });
    });
    let sending_done = Instant::now();
    eprintln!(
        "bench: load round {phase}: sent {} mentions in {:.1} s",
        sent.iter().filter(|s| s.event.is_some()).count(),
        round_started_ms.abs_diff(now_ms()) as f64 / 1000.0
    );
    // Wait until every mention of a spec'd human has a reply (then 15 s
    // more for duplicates), or nothing new came for 60 s (and a killed
    // agent is back), or `settings.wait` passed. A killed agent that has
    // not answered anything since its restart is probed (not counted).
    let expected: Vec<&Sent> = sent.iter().filter(|s| s.expected && s.event.is_some()).collect();
    let mut last_count = 0;
    let mut last_change = Instant::now();
    let mut all_answered_at: Option<Instant> = None;
    let mut probes: Vec<String> = Vec::new();
    let mut last_probe = Instant::now();
    let mut back_ms: Option<i64> = None;
    let mut messages;
    loop {
        messages = messages_since(hub, admin, &anchor);
        let (replies, _) = match_replies(&messages, &sent, &user_of);
        let count: usize = replies.values().map(Vec::len).sum();
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
        if let Some(k) = &killed {
            let user = &user_of[&k.agent];
            back_ms = messages
                .iter()
                .filter(|e| e["sender"] == user.as_str())
                .map(|e| e["origin_server_ts"].as_i64().unwrap_or_default())
                .find(|ts| *ts > k.restarted_ms);
            if back_ms.is_none() && last_probe.elapsed() > Duration::from_secs(10) {
                let probe = format!("tag-{phase}probe{}", probes.len());
                admin.mention(hub, user, &format!("are you back? {probe}"));
                probes.push(probe);
                last_probe = Instant::now();
            }
        }
        let answered = expected.iter().all(|s| replies.contains_key(&s.token));
        if answered && all_answered_at.is_none() {
            all_answered_at = Some(Instant::now());
        }
        let back = killed.is_none() || back_ms.is_some();
        if all_answered_at.is_some_and(|at| at.elapsed() > Duration::from_secs(15))
            || (back && last_change.elapsed() > Duration::from_secs(60))
            || sending_done.elapsed() > settings.wait
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let (replies, mentioned) = match_replies(&messages, &sent, &user_of);
    let (limited, logged_requests) = rate_limited_since(hub, log_offset);
    // What the model was asked: a token in a request the stand-in logged
    // reached the model (an unanswered one there was answered and lost, or
    // folded into another mention's turn).
    let standin = hub.standin_log();
    let seen_by_model = |token: &str| {
        standin
            .lines()
            .any(|l| l.contains(token) && l.contains("\"user_message\""))
    };
    keep_logs(hub, agents, phase);
    let mut per_agent = serde_json::Map::new();
    for (agent, user) in agents {
        let mine: Vec<&Sent> = sent.iter().filter(|s| &s.agent == agent && s.event.is_some()).collect();
        let ours: Vec<&Sent> = mine.iter().copied().filter(|s| s.expected).collect();
        let mut latencies: Vec<f64> = ours
            .iter()
            .filter_map(|s| {
                let first = replies.get(&s.token)?.iter().min()?;
                Some((first - mentioned.get(&s.token)?) as f64)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let times = |s: &Sent| replies.get(&s.token).map_or(0, Vec::len);
        let unanswered: Vec<&Sent> = ours.iter().copied().filter(|s| times(s) == 0).collect();
        let strangers: Vec<&Sent> = mine.iter().copied().filter(|s| !s.expected).collect();
        let mut entry = json!({
            "user": user,
            "sent": ours.len(),
            "answered_once": ours.iter().filter(|s| times(s) == 1).count(),
            "answered_twice_or_more": ours.iter().filter(|s| times(s) >= 2).count(),
            "unanswered": unanswered.len(),
            "unanswered_seen_by_model": unanswered.iter().filter(|s| seen_by_model(&s.token)).count(),
            // With their event ids: what to look for in the agent's log.
            "unanswered_mentions": unanswered
                .iter()
                .map(|s| json!({"token": s.token, "event": s.event, "seen_by_model": seen_by_model(&s.token)}))
                .collect::<Vec<_>>(),
            "p50_ms": percentile(&latencies, 50),
            "p95_ms": percentile(&latencies, 95),
            "max_ms": latencies.last(),
            "unlisted_human_sent": strangers.len(),
            "unlisted_human_answered": strangers.iter().filter(|s| times(s) > 0).count(),
            "replies_rate_limited_429": limited.iter().filter(|(r, _)| r.starts_with(user.as_str())).map(|(_, n)| n).sum::<usize>(),
        });
        if let Some(k) = killed.as_ref().filter(|k| &k.agent == agent) {
            let back = back_ms.unwrap_or(i64::MAX);
            let window = |from: i64, to: i64| {
                let these: Vec<&Sent> = ours
                    .iter()
                    .copied()
                    .filter(|s| mentioned.get(&s.token).is_some_and(|ts| *ts >= from && *ts < to))
                    .collect();
                json!({
                    "sent": these.len(),
                    "answered": these.iter().filter(|s| times(s) > 0).count(),
                    "answered_twice_or_more": these.iter().filter(|s| times(s) >= 2).count(),
                })
            };
            entry["kill"] = json!({
                "killed_s": (k.killed_ms - round_started_ms) as f64 / 1000.0,
                "restarted_s": (k.restarted_ms - round_started_ms) as f64 / 1000.0,
                "back_s": back_ms.map(|b| (b - round_started_ms) as f64 / 1000.0),
                "probes": probes.len(),
                "before_kill": window(i64::MIN, k.killed_ms),
                "while_down": window(k.killed_ms, back),
                "after_back": window(back, i64::MAX),
            });
        }
        per_agent.insert(agent.clone(), entry);
    }
    let result = json!({
        "round": if kill.is_some() { "kill" } else { "steady" },
        "mentions_per_human": settings.mentions,
        "stranger_mentions": settings.stranger_mentions,
        "spread_s": settings.spread.as_secs_f64(),
        "human_limits_lifted": settings.lift,
        "senders": sender_stats,
        "agents": per_agent,
        "rate_limited_429_by_requester": limited,
        "sync_gaps_by_requester": sync_gaps_since(hub, log_offset),
        "synapse_requests_logged": logged_requests,
        "warden_loop_breaker": loop_breaks_since(hub, audit_offset),
        "waited_s": sending_done.elapsed().as_secs_f64(),
        "load_before": load_before,
        "load_after": load_average(),
    });
    eprintln!("bench: load round {phase}: {result}");
    result
}

/// Waits until none of `agents` (name, user id) has said anything for
/// `quiet_for`, at most `at_most`; returns the seconds waited. What the
/// cold start's probes still get answered (OpenClaw and Hermes answer each
/// one sent after they connected, late) must not run into what is
/// measured next.
pub fn quiet(hub: &Hub, admin: &Member, agents: &[(String, String)], quiet_for: Duration, at_most: Duration) -> f64 {
    let anchor = marker(hub, admin, "bench: waiting for quiet");
    let started = Instant::now();
    let mut seen = 0;
    let mut since = Instant::now();
    while started.elapsed() < at_most && since.elapsed() < quiet_for {
        let said = messages_since(hub, admin, &anchor)
            .iter()
            .filter(|e| agents.iter().any(|(_, user)| e["sender"] == user.as_str()))
            .count();
        if said != seen {
            seen = said;
            since = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    started.elapsed().as_secs_f64()
}

/// The load rounds: steady, then (with `BENCH_LOAD_KILL`) the kill round.
pub fn run(hub: &Hub, admin: &Member, agents: &[&str]) -> Value {
    let settings = Settings::from_env();
    let gendo = Sender {
        user_id: format!("@gendo:{}", hub.appliance.matrix.server_name),
        token: admin.token.clone(),
        in_spec: true,
        mentions: settings.mentions,
    };
    let server = &hub.appliance.matrix.server_name;
    lift_rate_limit(
        hub,
        &format!("@{}:{server}", agent_appliance::schema::plan::BOOTSTRAP_LOCALPART),
    );
    let senders = vec![
        gendo,
        spec_human(hub, crate::spec::SECOND_HUMAN, &settings),
        stranger(hub, admin, &settings),
    ];
    if settings.lift {
        for sender in &senders {
            lift_rate_limit(hub, &sender.user_id);
        }
    }
    let agents: Vec<(String, String)> = agents
        .iter()
        .map(|a| (a.to_string(), hub.appliance.agents[*a].user_id.clone()))
        .collect();
    quiet(hub, admin, &agents, Duration::from_secs(10), Duration::from_secs(120));
    let mut rounds = vec![round(hub, admin, &senders, &agents, &settings, 's', None)];
    if let Some(kill) = settings.kill.as_deref().filter(|k| agents.iter().any(|(a, _)| a == k)) {
        quiet(hub, admin, &agents, Duration::from_secs(10), Duration::from_secs(120));
        rounds.push(round(hub, admin, &senders, &agents, &settings, 'k', Some(kill)));
    }
    json!(rounds)
}
