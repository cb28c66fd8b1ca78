//! Rooms: created by the bootstrap account in one `createRoom` that carries
//! every setting (invite-only, `m.federate`, history, guests, power levels,
//! name, topic, alias, invites); agents joined with their own tokens. Found
//! again by alias, so a rerun creates nothing.
//!
//! `createRoom` is not atomic inside Synapse: it points the alias at the
//! room first, then writes the create event, the creator's join, and only
//! then the settings and the invites. A bootstrap killed while Synapse is
//! in there (and a power cut, which stops Synapse too) can leave the alias
//! on a half-made room. So a room found by alias is read whole (admin API),
//! and: made by someone else, it is refused; made by the bootstrap account
//! but never joined by it (nothing in it to keep), the alias is moved to a
//! new room; otherwise every setting that is missing or differs from the
//! plan is written.

use std::collections::BTreeMap;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::client::{Client, segment};
use super::plan::PlannedRoom;

/// The room version bootstrap creates: version 12 gives the creator
/// implicit, unremovable power, so the creator must not (and need not) be
/// listed in `power_levels.users`. Pinned so that holds on any Synapse.
pub const ROOM_VERSION: &str = "12";

/// How long a room that has no creator's join yet is given to get one
/// before it is taken for the remains of an interrupted `createRoom`: a
/// `createRoom` still running in Synapse (its bootstrap was killed a
/// moment ago) gets there within milliseconds; one cut by a power loss
/// never does.
const HALF_MADE_GRACE: Duration = Duration::from_secs(5);

/// What a run did to one room.
#[derive(Debug, Default)]
pub struct RoomReport {
    pub room_id: String,
    pub created: bool,
    /// The half-made room the alias pointed at before this run moved it.
    pub replaced: Option<String>,
    /// Settings rewritten to match the plan (join rule, name, power levels...).
    pub updated: Vec<&'static str>,
    pub invited: Vec<String>,
    pub joined: Vec<String>,
}

pub struct Rooms<'a> {
    pub client: &'a Client,
    /// The bootstrap account: it creates rooms and invites, and trusts only
    /// rooms it created. A server admin, so it reads any room's state.
    pub user_id: &'a str,
    pub token: &'a str,
}

/// The power levels of a planned room, complete (not merged into Synapse's
/// defaults), so a room repaired after an interrupted creation gets exactly
/// what a room created in one go has.
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
        // Settings that decide who gets in and what they see: admins only.
        // (Room v12 creators outrank 100, so only they may replace the room.)
        "events": {
            "m.room.power_levels": 100,
            "m.room.join_rules": 100,
            "m.room.history_visibility": 100,
            "m.room.guest_access": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
            "m.room.tombstone": 150,
            "m.room.canonical_alias": 50,
            "m.room.name": 50,
            "m.room.topic": 50,
            "m.room.avatar": 50,
        },
    })
}

/// One setting: label, event type (state key ""), the content field
/// compared, and the content.
type Setting = (&'static str, &'static str, &'static str, Value);

/// The settings every planned room has besides its power levels, in the
/// order a repair writes them (who may join first).
fn settings(room: &PlannedRoom) -> Vec<Setting> {
    let mut settings = vec![
        (
            "join rule",
            "m.room.join_rules",
            "join_rule",
            json!({ "join_rule": "invite" }),
        ),
        (
            "history visibility",
            "m.room.history_visibility",
            "history_visibility",
            json!({ "history_visibility": "invited" }),
        ),
        (
            "guest access",
            "m.room.guest_access",
            "guest_access",
            json!({ "guest_access": "forbidden" }),
        ),
        (
            "alias",
            "m.room.canonical_alias",
            "alias",
            json!({ "alias": room.alias }),
        ),
        ("name", "m.room.name", "name", json!({ "name": room.name })),
    ];
    if let Some(topic) = &room.topic {
        settings.push(("topic", "m.room.topic", "topic", json!({ "topic": topic })));
    }
    settings
}

/// A room's current state, as the homeserver holds it.
struct RoomState {
    /// (event type, state key) -> the whole event (`sender`, `content`).
    events: BTreeMap<(String, String), Value>,
}

impl RoomState {
    fn event(&self, event_type: &str, state_key: &str) -> Option<&Value> {
        self.events.get(&(event_type.to_string(), state_key.to_string()))
    }

    /// A string field of a state event's content.
    fn field(&self, event_type: &str, state_key: &str, field: &str) -> Option<&str> {
        self.event(event_type, state_key)?.get("content")?.get(field)?.as_str()
    }

    fn membership(&self, user_id: &str) -> Option<&str> {
        self.field("m.room.member", user_id, "membership")
    }

    fn creator(&self) -> Option<&str> {
        self.event("m.room.create", "")?.get("sender")?.as_str()
    }
}

impl Rooms<'_> {
    /// Every current state event of the room, whoever is in it (admin API:
    /// the bootstrap account may not be in a room that points at its alias).
    fn room_state(&self, room_id: &str) -> Result<RoomState> {
        let path = format!("/_synapse/admin/v1/rooms/{}/state", segment(room_id));
        let reply = self.client.get(&path, Some(self.token))?;
        if !reply.ok() {
            bail!("failed to read the state of room `{room_id}` ({})", reply.describe());
        }
        let events = reply
            .body
            .get("state")
            .and_then(Value::as_array)
            .context("the room state answer has no `state` list")?;
        let events = events
            .iter()
            .filter_map(|event| {
                let event_type = event.get("type")?.as_str()?.to_string();
                let state_key = event.get("state_key")?.as_str()?.to_string();
                Some(((event_type, state_key), event.clone()))
            })
            .collect();
        Ok(RoomState { events })
    }

    /// Who created the room, by Synapse's own record: needed when the room
    /// has no create event yet.
    fn recorded_creator(&self, room_id: &str) -> Result<Option<String>> {
        let reply = self.client.get(
            &format!("/_synapse/admin/v1/rooms/{}", segment(room_id)),
            Some(self.token),
        )?;
        if reply.status == 404 {
            return Ok(None);
        }
        if !reply.ok() {
            bail!("failed to read the details of room `{room_id}` ({})", reply.describe());
        }
        Ok(reply.str("creator").map(str::to_string))
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

    fn delete_alias(&self, alias: &str) -> Result<()> {
        let reply = self.client.delete(
            &format!("/_matrix/client/v3/directory/room/{}", segment(alias)),
            Some(self.token),
        )?;
        if !reply.ok() {
            bail!("failed to remove room alias `{alias}` ({})", reply.describe());
        }
        Ok(())
    }

    /// One `createRoom` with every setting the room must have, so that only
    /// an interruption inside Synapse can leave one out (repaired by the
    /// next run, see the module comment).
    fn create(&self, room: &PlannedRoom) -> Result<String> {
        let initial_state: Vec<Value> = settings(room)
            .into_iter()
            // `createRoom` sets these from its own fields.
            .filter(|(_, event_type, _, _)| !matches!(*event_type, "m.room.name" | "m.room.topic"))
            .map(|(_, event_type, _, content)| json!({ "type": event_type, "state_key": "", "content": content }))
            .collect();
        let mut body = json!({
            "preset": "private_chat",
            "visibility": "private",
            "room_version": ROOM_VERSION,
            "name": room.name,
            "room_alias_name": room.alias_localpart,
            "creation_content": { "m.federate": room.federate },
            "initial_state": initial_state,
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

    /// The state of the room the alias points at, once it is usable: it
    /// refuses a room the bootstrap account did not create or is not in,
    /// and returns `None` for one it created that holds nothing but its
    /// create event (the remains of an interrupted `createRoom`, after
    /// `HALF_MADE_GRACE`).
    fn usable_state(&self, room: &PlannedRoom, room_id: &str) -> Result<Option<RoomState>> {
        let started = Instant::now();
        loop {
            let state = self.room_state(room_id)?;
            let creator = match state.creator() {
                Some(creator) => Some(creator.to_string()),
                None => self.recorded_creator(room_id)?,
            };
            if creator.as_deref() != Some(self.user_id) {
                bail!(
                    "room `{}` (`{room_id}`) was made by `{}`, not by the appliance's account `{}`\nhint: the appliance puts its agents only in rooms it made; remove the alias as a server admin (`DELETE /_matrix/client/v3/directory/room/{}`) or pick another room name in the spec, then rerun `appliance bootstrap`",
                    room.alias,
                    creator.as_deref().unwrap_or("an unknown account"),
                    self.user_id,
                    segment(&room.alias)
                );
            }
            if state.membership(self.user_id) == Some("join") {
                return Ok(Some(state));
            }
            // Only a room with nothing but its create event is a shell; one
            // the bootstrap account left has members and history to keep.
            if !state.events.keys().all(|(event_type, _)| event_type == "m.room.create") {
                bail!(
                    "the appliance's account `{}` is not in its room `{}` (`{room_id}`)\nhint: bring `{}` back into the room (invite it, then join with its token from the state directory), or remove the alias to have a new room made, then rerun `appliance bootstrap`",
                    self.user_id,
                    room.alias,
                    self.user_id
                );
            }
            if started.elapsed() >= HALF_MADE_GRACE {
                return Ok(None);
            }
            sleep(Duration::from_millis(250));
        }
    }

    /// Writes each setting that is missing or differs from the plan; returns
    /// what it wrote. Power levels: set whole when missing, otherwise only
    /// the plan's users are set back (other levels are the operator's).
    fn repair(&self, room: &PlannedRoom, room_id: &str, state: &RoomState) -> Result<Vec<&'static str>> {
        let mut updated = Vec::new();
        let settings = settings(room);
        // Who may join first, then who may change what, then the rest.
        let (join_rule, others) = settings.split_first().context("a room has a join rule")?;
        self.write_if_differs(room_id, state, join_rule, &mut updated)?;
        match state.event("m.room.power_levels", "").and_then(|e| e.get("content")) {
            None => {
                self.set_state(room_id, "m.room.power_levels", &power_levels(room))?;
                updated.push("power levels");
            }
            Some(current) => {
                let users = current["users"].as_object().cloned().unwrap_or_default();
                let stale = room
                    .power_levels
                    .iter()
                    .any(|(user, level)| users.get(user).and_then(Value::as_u64) != Some(u64::from(*level)));
                if stale {
                    let mut levels = current.clone();
                    for (user, level) in &room.power_levels {
                        levels["users"][user] = json!(level);
                    }
                    self.set_state(room_id, "m.room.power_levels", &levels)?;
                    updated.push("power levels");
                }
            }
        }
        for setting in others {
            self.write_if_differs(room_id, state, setting, &mut updated)?;
        }
        Ok(updated)
    }

    /// Writes one setting when the room's differs; records its label.
    fn write_if_differs(
        &self,
        room_id: &str,
        state: &RoomState,
        (label, event_type, field, content): &Setting,
        updated: &mut Vec<&'static str>,
    ) -> Result<()> {
        if state.field(event_type, "", field) != content[*field].as_str() {
            self.set_state(room_id, event_type, content)?;
            updated.push(label);
        }
        Ok(())
    }

    /// Makes the room match the plan; `agent_tokens` maps agents' user ids
    /// to their tokens (members without one are humans: invited only).
    pub fn ensure(&self, room: &PlannedRoom, agent_tokens: &BTreeMap<&str, &str>) -> Result<RoomReport> {
        let mut report = RoomReport::default();
        let mut found = None;
        if let Some(room_id) = self.resolve(&room.alias)? {
            match self.usable_state(room, &room_id)? {
                Some(state) => found = Some((room_id, state)),
                None => {
                    // Only the bootstrap account ever was in it: nothing to keep.
                    self.delete_alias(&room.alias)?;
                    report.replaced = Some(room_id);
                }
            }
        }
        let (room_id, state) = match found {
            Some(found) => found,
            None => {
                let room_id = self.create(room)?;
                report.created = true;
                let state = self.room_state(&room_id)?;
                (room_id, state)
            }
        };

        // `m.federate` is fixed at creation: a room that differs is not
        // repaired but refused (its history and members are not ours to drop).
        let federate = state
            .event("m.room.create", "")
            .and_then(|c| c.get("content"))
            .and_then(|c| c.get("m.federate"))
            .and_then(Value::as_bool)
            .unwrap_or(true);
        if federate != room.federate {
            bail!(
                "room `{}` (`{room_id}`) was created with `m.federate` = `{federate}`, the plan says `{}`, and it cannot change after creation\nhint: remove the alias (or the room) and rerun `appliance bootstrap` to create it afresh",
                room.alias,
                room.federate
            );
        }
        report.updated = self.repair(room, &room_id, &state)?;

        for member in &room.members {
            let membership = state.membership(member);
            match membership {
                Some("join") => continue,
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
