//! A member of a room as a Matrix client of the rehearsal's Synapse: the
//! human admin @gendo, and for the warden's steps a stranger or an agent's
//! own account. Real HTTP, from a thread inside the namespace.

use std::time::{Duration, Instant};

use agent_appliance::on_host::bootstrap::client::{Client, segment};
use serde_json::{Value, json};

use crate::hub::Hub;

pub struct Member {
    pub token: String,
    pub room_id: String,
}

fn client() -> Client {
    Client::new(
        "http://127.0.0.1:8008",
        Instant::now() + Duration::from_secs(60),
        Duration::from_secs(30),
    )
}

impl Member {
    /// Logs in with the initial password (`appliance admin password`)
    /// and accepts the invitation to `#<room>:<server>`.
    pub fn login(hub: &Hub, localpart: &str, room_alias: &str) -> Member {
        let server = hub.appliance.matrix.server_name.clone();
        let password = hub.admin_password(localpart);
        let user_id = format!("@{localpart}:{server}");
        let alias = room_alias.to_string();
        hub.netns.run(move || {
            let client = client();
            let login = client
                .post(
                    "/_matrix/client/v3/login",
                    None,
                    &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id}, "password": password, "device_id": "REHEARSAL"}),
                )
                .unwrap();
            assert!(login.ok(), "login as {user_id}: {}", login.describe());
            let token = login.str("access_token").unwrap().to_string();
            let join = client
                .post(&format!("/_matrix/client/v3/join/{}", segment(&alias)), Some(&token), &json!({}))
                .unwrap();
            assert!(join.ok(), "{user_id} joins {alias}: {}", join.describe());
            let room_id = join.str("room_id").unwrap().to_string();
            Member { token, room_id }
        })
    }

    /// Sends a message that mentions `agent` (pill, m.mentions and the id
    /// in the body, as Element does); returns its event id.
    pub fn mention(&self, hub: &Hub, agent: &str, text: &str) -> String {
        self.send(hub, agent_appliance::on_host::bootstrap::client::mention(agent, text))
    }

    /// Another account in this member's room, by its access token.
    pub fn other(&self, token: &str) -> Member {
        Member {
            token: token.to_string(),
            room_id: self.room_id.clone(),
        }
    }

    pub fn send(&self, hub: &Hub, content: Value) -> String {
        match self.try_send(hub, content) {
            Ok(event) => event,
            Err((_, describe)) => panic!("send: {describe}"),
        }
    }

    /// Sends a message: its event id, or the homeserver's status and error
    /// (a muted member gets 403 M_FORBIDDEN).
    pub fn try_send(&self, hub: &Hub, content: Value) -> Result<String, (u16, String)> {
        let token = self.token.clone();
        let room = self.room_id.clone();
        let txn = format!(
            "rehearsal-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        hub.netns.run(move || {
            let reply = client()
                .put(
                    &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", segment(&room)),
                    Some(&token),
                    &content,
                )
                .unwrap();
            if !reply.ok() {
                return Err((reply.status, reply.describe()));
            }
            Ok(reply.str("event_id").unwrap().to_string())
        })
    }

    /// Messages in the room after `since_event`, oldest first.
    pub fn messages_after(&self, hub: &Hub, since_event: &str) -> Vec<Value> {
        let token = self.token.clone();
        let room = self.room_id.clone();
        let since = since_event.to_string();
        hub.netns.run(move || {
            let reply = client()
                .get(
                    &format!(
                        "/_matrix/client/v3/rooms/{}/context/{}?limit=100",
                        segment(&room),
                        segment(&since)
                    ),
                    Some(&token),
                )
                .unwrap();
            assert!(reply.ok(), "context: {}", reply.describe());
            reply.body["events_after"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e["type"] == "m.room.message")
                .collect()
        })
    }

    /// Waits up to `within` for a message from `sender` after `event` whose
    /// body contains `needle`; returns its body and the seconds it took.
    pub fn wait_reply(
        &self,
        hub: &Hub,
        event: &str,
        sender: &str,
        needle: &str,
        within: Duration,
    ) -> Option<(String, f64)> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(found) = self
                .messages_after(hub, event)
                .into_iter()
                .find(|e| e["sender"] == sender && e["content"]["body"].as_str().is_some_and(|b| b.contains(needle)))
            {
                let body = found["content"]["body"].as_str().unwrap_or_default().to_string();
                return Some((body, started.elapsed().as_secs_f64()));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        None
    }
}

/// How long an agent may take from container start to its first answer.
/// Measured here (2 vCPUs, other builds running): casper 19.5 s, melchior
/// 49.1 s, and 83.7 s after a kill -9; generous, so a loaded CI machine
/// passes.
pub const FIRST_ANSWER: Duration = Duration::from_secs(300);

pub fn model_of(hub: &Hub, agent: &str) -> String {
    hub.appliance.agents[agent]
        .model
        .clone()
        .expect("the agent has a model")
}

pub fn agent_id(hub: &Hub, agent: &str) -> String {
    hub.appliance.agents[agent].user_id.clone()
}

/// Every message `agent` sent in the room so far (from the room's start).
pub fn bodies_from(hub: &Hub, admin: &Member, since: &str, agent: &str) -> Vec<String> {
    let user = agent_id(hub, agent);
    admin
        .messages_after(hub, since)
        .into_iter()
        .filter(|e| e["sender"] == user.as_str())
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Mentions `agent` until it answers (an agent that is still starting
/// misses the first messages), within `FIRST_ANSWER`.
/// Returns the answer, the seconds it took and the first mention's event.
pub fn first_answer(hub: &Hub, admin: &Member, agent: &str) -> (String, f64, String) {
    let user = agent_id(hub, agent);
    let started = std::time::Instant::now();
    let mut first = None;
    while started.elapsed() < FIRST_ANSWER {
        assert!(
            hub.is_running(agent),
            "{agent} exited before it answered\n{}",
            hub.all_reports()
        );
        let tag = format!("tag-{}{}", agent, started.elapsed().as_secs());
        let event = admin.mention(hub, &user, &format!("hello, please answer {tag}"));
        let first = first.get_or_insert_with(|| event.clone()).clone();
        // The stand-in names the model it answered as: the agent's.
        let needle = format!("[stand-in] model {}", model_of(hub, agent));
        if let Some((body, _)) = admin.wait_reply(hub, &event, &user, &needle, Duration::from_secs(30)) {
            return (body, started.elapsed().as_secs_f64(), first);
        }
    }
    panic!(
        "{agent} did not answer a mention within {} s\n{}",
        FIRST_ANSWER.as_secs(),
        hub.all_reports()
    );
}

/// A mention of `agent` and its answer containing `needle`, within `within`.
pub fn ask(hub: &Hub, admin: &Member, agent: &str, text: &str, needle: &str, within: Duration) -> (String, f64) {
    let user = agent_id(hub, agent);
    let event = admin.mention(hub, &user, text);
    admin.wait_reply(hub, &event, &user, needle, within).unwrap_or_else(|| {
        panic!(
            "{agent} did not answer `{text}` with `{needle}` within {} s; its messages: {:?}\n{}",
            within.as_secs(),
            bodies_from(hub, admin, &event, agent),
            hub.all_reports()
        )
    })
}
