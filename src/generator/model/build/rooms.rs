//! `[rooms.*]`: members (agents, and `@admins`), federation, names.

use std::collections::{BTreeMap, BTreeSet};

use toml::Spanned;

use super::matrix::Accounts;
use super::{Builder, span};
use crate::generator::model::names::text_problem;
use crate::generator::model::{MemberRole, Room, RoomMember};
use crate::generator::spec::schema::RoomSpec;

pub(super) fn resolve(b: &mut Builder, accounts: &Accounts) -> BTreeMap<String, Room> {
    let agent_names = b.agent_names();
    let mut rooms = BTreeMap::new();
    for (name, room) in &b.spec.rooms {
        b.check_name("room", name);
        if room.members.is_empty() {
            b.error(
                span(name),
                format!("room `{}` has no members", name.get_ref()),
                "list agents and `@admins` in `members`",
            );
        }
        let federate = room.federate.as_ref().is_some_and(|f| *f.get_ref());
        if let Some(flag) = room
            .federate
            .as_ref()
            .filter(|_| federate && !b.spec.matrix.get_ref().federation)
        {
            b.error(
                span(flag),
                format!(
                    "room `{}` federates, but the homeserver has federation off",
                    name.get_ref()
                ),
                "set `federation = true` under `[matrix]`, or remove `federate`",
            );
        }
        for (what, text) in [("name", &room.name), ("topic", &room.topic)] {
            if let Some(text) = text
                && let Some(problem) = text_problem(text.get_ref())
            {
                b.error(
                    span(text),
                    format!("the {what} of room `{}` {problem}", name.get_ref()),
                    format!("write the {what} as one line of printable text"),
                );
            }
        }
        let members = members(b, name, room, accounts, &agent_names);
        let name = name.get_ref().clone();
        let server_name = &accounts.server_name;
        rooms.insert(
            name.clone(),
            Room {
                alias: format!("#{name}:{server_name}"),
                display_name: room.name.as_ref().map_or_else(|| name.clone(), |n| n.get_ref().clone()),
                topic: room.topic.as_ref().map(|t| t.get_ref().clone()),
                federate,
                members,
                name,
            },
        );
    }
    rooms
}

/// A room's members as Matrix users; unknown and repeated ones are errors.
fn members(
    b: &mut Builder,
    name: &Spanned<String>,
    room: &RoomSpec,
    accounts: &Accounts,
    agent_names: &BTreeSet<&str>,
) -> Vec<RoomMember> {
    let server_name = &accounts.server_name;
    let mut members = Vec::new();
    let mut seen = BTreeSet::new();
    for member in &room.members {
        let text = member.get_ref();
        if !seen.insert(text.clone()) {
            b.error(
                span(member),
                format!("`{text}` is listed twice in room `{}`", name.get_ref()),
                "remove the duplicate",
            );
            continue;
        }
        if text.is_empty() || text == "@" {
            b.error(
                span(member),
                format!("room `{}` lists an empty member", name.get_ref()),
                "write an agent name, or `@name` for an admin",
            );
            continue;
        }
        if let Some(admin) = text.strip_prefix('@') {
            if !accounts.admin_names.contains(admin) {
                b.error(
                    span(member),
                    format!("unknown room member `{text}`: no admin `{admin}` in `[matrix].admins`"),
                    format!("add \"{admin}\" to `admins` under `[matrix]`, or remove it from the room"),
                );
            }
            members.push(RoomMember {
                user_id: format!("@{admin}:{server_name}"),
                role: MemberRole::Admin,
                power_level: 100,
            });
        } else if agent_names.contains(text.as_str()) {
            members.push(RoomMember {
                user_id: format!("@{text}:{server_name}"),
                role: MemberRole::Agent,
                power_level: 0,
            });
        } else {
            b.error(
                span(member),
                format!("unknown room member `{text}`: no agent has that name"),
                format!("declare `[agents.{text}]`, or write `@{text}` for a human admin"),
            );
        }
    }
    members
}
