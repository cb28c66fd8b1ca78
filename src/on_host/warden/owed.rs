//! Answers owed: a human's mention of an agent lets that agent answer once
//! without the answer counting toward the loop breaker's budget.
//!
//! The loop breaker counts agent messages since the last human one. Without
//! this, a burst of human mentions leaves the agents a backlog of answers
//! that, once the humans stop, counts like agents talking among themselves:
//! the rehearsal's load bench (issue 25) saw the breaker mute every agent
//! while they were still answering, and the muted answers were lost. An
//! answer is owed for `WINDOW_MS` after the mention, so a mention an agent
//! ignored (a stranger's, say) does not lend it leeway later; a human
//! message resets the count anyway, so owing answers to anyone who can post
//! gives a person no power over the breaker they did not have.

use std::collections::BTreeMap;

use serde_json::Value;

/// How long after a mention its answer is still owed (ms, server clock).
pub const WINDOW_MS: u64 = 10 * 60 * 1000;

/// At most this many owed answers per agent and room (the oldest go first),
/// so the warden's state file stays small whatever the humans send.
pub const MOST: usize = 256;

/// Room id -> agent -> `origin_server_ts` of each mention not answered yet.
pub type Owed = BTreeMap<String, BTreeMap<String, Vec<u64>>>;

/// The agents among `agents` that a message's `content` mentions: listed
/// in `m.mentions.user_ids` (what clients send since Matrix 1.7), or
/// named by user id in its body or formatted body (a matrix.to link;
/// older clients).
pub fn mentioned<'a>(content: &Value, agents: &'a [String]) -> Vec<&'a str> {
    let listed: Vec<&str> = content
        .pointer("/m.mentions/user_ids")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let text = |key: &str| content.get(key).and_then(Value::as_str).unwrap_or_default();
    let (body, formatted) = (text("body"), text("formatted_body"));
    agents
        .iter()
        .filter(|agent| {
            listed.contains(&agent.as_str()) || body.contains(agent.as_str()) || formatted.contains(agent.as_str())
        })
        .map(String::as_str)
        .collect()
}

/// Records that `agent` owes `room` an answer to a mention sent at `ts`.
pub fn owe(owed: &mut Owed, room: &str, agent: &str, ts: u64) {
    let mentions = owed
        .entry(room.to_string())
        .or_default()
        .entry(agent.to_string())
        .or_default();
    mentions.push(ts);
    if mentions.len() > MOST {
        mentions.remove(0);
    }
}

/// Whether `agent`'s message at `ts` in `room` answers an owed mention:
/// the oldest one still within `WINDOW_MS` is settled by it; the expired
/// ones are dropped.
pub fn settle(owed: &mut Owed, room: &str, agent: &str, ts: u64) -> bool {
    let Some(mentions) = owed.get_mut(room).and_then(|r| r.get_mut(agent)) else {
        return false;
    };
    mentions.retain(|mention| ts.saturating_sub(*mention) <= WINDOW_MS);
    let answered = !mentions.is_empty();
    if answered {
        mentions.remove(0);
    }
    if mentions.is_empty() {
        let room_owed = owed.get_mut(room).expect("looked up above");
        room_owed.remove(agent);
        if room_owed.is_empty() {
            owed.remove(room);
        }
    }
    answered
}

/// How many mentions of `agent`, in any room, made within `WINDOW_MS`
/// before `now_ms`, it has not answered.
pub fn unanswered(owed: &Owed, agent: &str, now_ms: u64) -> usize {
    owed.values()
        .filter_map(|room| room.get(agent))
        .flatten()
        .filter(|mention| now_ms.saturating_sub(**mention) <= WINDOW_MS)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agents() -> Vec<String> {
        vec!["@melchior:magi".to_string(), "@casper:magi".to_string()]
    }

    #[test]
    fn a_mention_is_found_in_m_mentions_the_body_or_a_link() {
        let agents = agents();
        let intentional = json!({"body": "Melchior: hi", "m.mentions": {"user_ids": ["@melchior:magi"]}});
        assert_eq!(mentioned(&intentional, &agents), ["@melchior:magi"]);
        let plain = json!({"body": "@casper:magi: run this"});
        assert_eq!(mentioned(&plain, &agents), ["@casper:magi"]);
        let link = json!({"body": "Casper: hi", "formatted_body": "<a href=\"https://matrix.to/#/@casper:magi\">Casper</a>: hi"});
        assert_eq!(mentioned(&link, &agents), ["@casper:magi"]);
        let both = json!({"body": "@melchior:magi and @casper:magi"});
        assert_eq!(mentioned(&both, &agents).len(), 2);
        assert!(mentioned(&json!({"body": "no one in particular"}), &agents).is_empty());
        // An empty m.mentions (a client saying "nobody") with no id in the text.
        assert!(mentioned(&json!({"body": "hi", "m.mentions": {}}), &agents).is_empty());
    }

    #[test]
    fn each_mention_settles_one_answer_oldest_first() {
        let mut owed = Owed::new();
        owe(&mut owed, "!r", "@melchior:magi", 1_000);
        owe(&mut owed, "!r", "@melchior:magi", 2_000);
        assert!(!settle(&mut owed, "!r", "@casper:magi", 3_000), "casper owes nothing");
        assert!(
            !settle(&mut owed, "!other", "@melchior:magi", 3_000),
            "owed in another room"
        );
        assert!(settle(&mut owed, "!r", "@melchior:magi", 3_000));
        assert_eq!(owed["!r"]["@melchior:magi"], [2_000]);
        assert!(settle(&mut owed, "!r", "@melchior:magi", 4_000));
        assert!(
            !settle(&mut owed, "!r", "@melchior:magi", 5_000),
            "two mentions, two answers"
        );
        assert!(owed.is_empty(), "nothing left behind: {owed:?}");
    }

    #[test]
    fn an_answer_is_owed_only_within_the_window() {
        let mut owed = Owed::new();
        owe(&mut owed, "!r", "@casper:magi", 1_000);
        owe(&mut owed, "!r", "@casper:magi", 1_000 + WINDOW_MS);
        // The first has expired by then, the second not yet.
        assert!(settle(&mut owed, "!r", "@casper:magi", 2_000 + WINDOW_MS));
        assert!(owed.is_empty(), "the expired one is dropped: {owed:?}");
        owe(&mut owed, "!r", "@casper:magi", 0);
        assert!(!settle(&mut owed, "!r", "@casper:magi", WINDOW_MS + 1));
        assert!(owed.is_empty());
    }

    #[test]
    fn unanswered_counts_every_room_within_the_window() {
        let mut owed = Owed::new();
        owe(&mut owed, "!a", "@casper:magi", 1_000);
        owe(&mut owed, "!b", "@casper:magi", 2_000);
        owe(&mut owed, "!b", "@melchior:magi", 2_000);
        assert_eq!(unanswered(&owed, "@casper:magi", 3_000), 2);
        assert_eq!(unanswered(&owed, "@casper:magi", 1_500 + WINDOW_MS), 1);
        assert_eq!(unanswered(&owed, "@balthasar:magi", 3_000), 0);
    }

    #[test]
    fn owed_answers_are_bounded() {
        let mut owed = Owed::new();
        for ts in 0..(MOST as u64 + 10) {
            owe(&mut owed, "!r", "@casper:magi", ts);
        }
        let mentions = &owed["!r"]["@casper:magi"];
        assert_eq!(mentions.len(), MOST);
        assert_eq!(mentions[0], 10, "the oldest went first");
    }
}
