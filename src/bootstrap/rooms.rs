//! Rooms: created by the bootstrap account, invite-only, federated only when
//! the plan says so; members invited, agents joined with their own tokens.
//! Found again by alias, so a rerun creates nothing.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::client::{Client, segment};
use super::plan::PlannedRoom;

/// The room version bootstrap creates: version 12 gives the creator
/// implicit, unremovable power, so the creator must not (and need not) be
/// listed in `power_levels.users`. Pinned so that holds on any Synapse.
pub const ROOM_VERSION: &str = "12";

/// What a run did to one room.
#[derive(Debug, Default)]
pub struct RoomReport {
    pub room_id: String,
    pub created: bool,
    /// State events rewritten to match the plan (name, topic, power levels).
    pub updated: Vec<&'static str>,
    pub invited: Vec<String>,
    pub joined: Vec<String>,
}

pub struct Rooms<'a> {
    pub client: &'a Client,
    /// The bootstrap account's token: it creates rooms and invites.
    pub token: &'a str,
}

fn power_levels(room: &PlannedRoom) -> Value {
    json!({
        // Humans named admins get their level; agents stay at the default 0.
        "users": room.power_levels,
        "users_default": 0,
        "events_default": 0,
        "state_default": 50,
        "invite": 100,
        "kick": 100,
        "ban": 100,
        "redact": 50,
    })
}

impl Rooms<'_> {
    fn state(&self, room_id: &str, event_type: &str, state_key: &str) -> Result<Option<Value>> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/{event_type}/{}",
            segment(room_id),
            segment(state_key)
        );
        let reply = self.client.get(&path, Some(self.token))?;
        if reply.ok() {
            return Ok(Some(reply.body));
        }
        if reply.status == 404 {
            return Ok(None);
        }
        bail!(
            "failed to read `{event_type}` of room `{room_id}` ({})",
            reply.describe()
        )
    }

    fn set_state(&self, room_id: &str, event_type: &str, content: &Value) -> Result<()> {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", segment(room_id));
        let reply = self.client.put(&path, Some(self.token), content)?;
        if !reply.ok() {
            bail!(
                "failed to set `{event_type}` of room `{room_id}` ({})",
                reply.describe()
            );
        }
        Ok(())
    }

    fn resolve(&self, alias: &str) -> Result<Option<String>> {
        let reply = self.client.get(
            &format!("/_matrix/client/v3/directory/room/{}", segment(alias)),
            Some(self.token),
        )?;
        if reply.ok() {
            return Ok(Some(
                reply
                    .str("room_id")
                    .context("alias lookup answered without `room_id`")?
                    .to_string(),
            ));
        }
        if reply.status == 404 {
            return Ok(None);
        }
        bail!("failed to look up room alias `{alias}` ({})", reply.describe())
    }

    fn create(&self, room: &PlannedRoom) -> Result<String> {
        let mut body = json!({
            "preset": "private_chat",
            "visibility": "private",
            "room_version": ROOM_VERSION,
            "name": room.name,
            "room_alias_name": room.alias_localpart,
            "creation_content": { "m.federate": room.federate },
            "initial_state": [
                { "type": "m.room.guest_access", "state_key": "", "content": { "guest_access": "forbidden" } },
                { "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "invited" } },
            ],
            "invite": room.members,
            "power_level_content_override": power_levels(room),
        });
        if let Some(topic) = &room.topic {
            body["topic"] = json!(topic);
        }
        let reply = self
            .client
            .post("/_matrix/client/v3/createRoom", Some(self.token), &body)?;
        if !reply.ok() {
            // A failed createRoom may leave a room without our alias behind;
            // it holds only the bootstrap account and is harmless.
            bail!("failed to create room `{}` ({})", room.alias, reply.describe());
        }
        Ok(reply
            .str("room_id")
            .context("createRoom answered without `room_id`")?
            .to_string())
    }

    /// Makes the room match the plan; `agent_tokens` maps agents' user ids
    /// to their tokens (members without one are humans: invited only).
    pub fn ensure(&self, room: &PlannedRoom, agent_tokens: &BTreeMap<&str, &str>) -> Result<RoomReport> {
        let mut report = RoomReport::default();
        let room_id = match self.resolve(&room.alias)? {
            Some(id) => id,
            None => {
                report.created = true;
                self.create(room)?
            }
        };

        // The alias could point at a room someone else made: check it is
        // ours before trusting it with agents.
        let join_rule = self.state(&room_id, "m.room.join_rules", "")?;
        let create = self.state(&room_id, "m.room.create", "")?;
        let federate = create
            .as_ref()
            .and_then(|c| c.get("m.federate"))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        if join_rule
            .as_ref()
            .and_then(|j| j.get("join_rule"))
            .and_then(Value::as_str)
            != Some("invite")
            || federate != room.federate
        {
            bail!(
                "room `{}` (`{room_id}`) is not invite-only with `m.federate` = `{}`\nhint: remove the alias (or the room) and rerun `appliance bootstrap` to create it afresh",
                room.alias,
                room.federate
            );
        }

        if !report.created {
            let name = self.state(&room_id, "m.room.name", "")?;
            if name.as_ref().and_then(|n| n.get("name")).and_then(Value::as_str) != Some(room.name.as_str()) {
                self.set_state(&room_id, "m.room.name", &json!({ "name": room.name }))?;
                report.updated.push("name");
            }
            if let Some(topic) = &room.topic {
                let current = self.state(&room_id, "m.room.topic", "")?;
                if current.as_ref().and_then(|t| t.get("topic")).and_then(Value::as_str) != Some(topic.as_str()) {
                    self.set_state(&room_id, "m.room.topic", &json!({ "topic": topic }))?;
                    report.updated.push("topic");
                }
            }
            let mut levels = self
                .state(&room_id, "m.room.power_levels", "")?
                .unwrap_or_else(|| power_levels(room));
            let users = levels["users"].as_object().cloned().unwrap_or_default();
            let stale = room
                .power_levels
                .iter()
                .any(|(user, level)| users.get(user).and_then(Value::as_u64) != Some(u64::from(*level)));
            if stale {
                for (user, level) in &room.power_levels {
                    levels["users"][user] = json!(level);
                }
                self.set_state(&room_id, "m.room.power_levels", &levels)?;
                report.updated.push("power levels");
            }
        }

        let reply = self.client.get(
            &format!("/_matrix/client/v3/rooms/{}/joined_members", segment(&room_id)),
            Some(self.token),
        )?;
        if !reply.ok() {
            bail!("failed to list the members of room `{room_id}` ({})", reply.describe());
        }
        let joined = reply
            .body
            .get("joined")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for member in &room.members {
            if joined.contains_key(member) {
                continue;
            }
            let membership = self
                .state(&room_id, "m.room.member", member)?
                .and_then(|m| m.get("membership").and_then(Value::as_str).map(str::to_string));
            match membership.as_deref() {
                Some("ban") => bail!(
                    "`{member}` is banned from room `{}`\nhint: unban them, or remove them from the room's members in the spec",
                    room.alias
                ),
                Some("invite") => {}
                _ => {
                    let path = format!("/_matrix/client/v3/rooms/{}/invite", segment(&room_id));
                    let reply = self
                        .client
                        .post(&path, Some(self.token), &json!({ "user_id": member }))?;
                    if !reply.ok() {
                        bail!(
                            "failed to invite `{member}` to room `{}` ({})",
                            room.alias,
                            reply.describe()
                        );
                    }
                    report.invited.push(member.clone());
                }
            }
            if let Some(token) = agent_tokens.get(member.as_str()) {
                let path = format!("/_matrix/client/v3/rooms/{}/join", segment(&room_id));
                let reply = self.client.post(&path, Some(token), &json!({}))?;
                if !reply.ok() {
                    bail!("`{member}` failed to join room `{}` ({})", room.alias, reply.describe());
                }
                report.joined.push(member.clone());
            }
        }
        report.room_id = room_id;
        Ok(report)
    }
}
