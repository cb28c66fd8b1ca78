//! Muting at the homeserver: an agent whose power level is below the
//! room's `events_default` cannot send messages (nor reactions, redactions
//! or state), and Synapse enforces that whatever the agent's code does.
//! Every other field of `m.room.power_levels` is kept as it is.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::on_host::bootstrap::client::{Client, segment};

/// The level a muted agent gets: one below what sending a message takes.
pub fn muted_level(levels: &Value) -> i64 {
    events_default(levels) - 1
}

fn events_default(levels: &Value) -> i64 {
    levels.get("events_default").and_then(Value::as_i64).unwrap_or(0)
}

/// The agent's own entry in `users`, if it has one.
pub fn entry(levels: &Value, user: &str) -> Option<i64> {
    levels.get("users").and_then(|u| u.get(user)).and_then(Value::as_i64)
}

/// `levels` with `user` set to `level`, or its entry removed (`None`).
pub fn with_level(levels: &Value, user: &str, level: Option<i64>) -> Value {
    let mut levels = levels.clone();
    if !levels.get("users").is_some_and(Value::is_object) {
        levels["users"] = json!({});
    }
    let users = levels["users"].as_object_mut().expect("made an object above");
    match level {
        Some(level) => users.insert(user.to_string(), json!(level)),
        None => users.remove(user),
    };
    levels
}

pub struct Rooms<'a> {
    pub client: &'a Client,
    pub token: &'a str,
}

impl Rooms<'_> {
    fn path(room_id: &str) -> String {
        format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
            segment(room_id)
        )
    }

    pub fn levels(&self, room_id: &str) -> Result<Value> {
        let reply = self.client.get(&Self::path(room_id), Some(self.token))?;
        if !reply.ok() {
            bail!(
                "failed to read the power levels of room `{room_id}` ({})",
                reply.describe()
            );
        }
        Ok(reply.body)
    }

    pub fn set_levels(&self, room_id: &str, levels: &Value) -> Result<()> {
        let reply = self.client.put(&Self::path(room_id), Some(self.token), levels)?;
        if !reply.ok() {
            bail!(
                "failed to set the power levels of room `{room_id}` ({})\nhint: the warden needs the room's top power level: it must be the room's creator (room version 12) or hold the highest level",
                reply.describe()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn muting_keeps_every_other_field_and_restoring_removes_the_entry() {
        let levels = json!({
            "users": { "@gendo:magi": 100 }, "users_default": 0, "events_default": 0,
            "state_default": 50, "invite": 100, "events": { "m.room.name": 50 },
        });
        assert_eq!(muted_level(&levels), -1);
        let muted = with_level(&levels, "@casper:magi", Some(-1));
        assert_eq!(muted["users"], json!({ "@gendo:magi": 100, "@casper:magi": -1 }));
        assert_eq!(muted["events"], levels["events"]);
        assert_eq!(muted["state_default"], 50);
        assert_eq!(entry(&muted, "@casper:magi"), Some(-1));
        assert_eq!(with_level(&muted, "@casper:magi", None), levels);
        let raised = json!({ "events_default": 10 });
        assert_eq!(muted_level(&raised), 9);
        assert_eq!(with_level(&raised, "@a:b", Some(9))["users"], json!({ "@a:b": 9 }));
    }
}
