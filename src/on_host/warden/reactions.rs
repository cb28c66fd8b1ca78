//! Reactions on the warden's cards (docs/warden.md, "Reactions on cards"):
//! an admin's ✅ or 👍 (`m.reaction`, an `m.annotation` of the card's
//! event) on an egress denial card is `!allow <agent> <host>` for the
//! spec's default grant duration, on a code execution card `!approve <id>`
//! (once, never standing); ❌ or 👎 is `!deny` / `!refuse`.
//!
//! The same rules as the typed commands: only the plan's admins, as the
//! homeserver names the `sender`; the first answer wins; a reaction on an
//! expired or forgotten card is refused, answered and audited. A
//! non-admin's reaction on a card does nothing and is audited, unanswered
//! (as a non-admin's command). Any other reaction (another emoji, an event
//! that is no card, a room other than the ops room) does nothing.
//!
//! Which event is which card survives a restart: a denial card's event id
//! is kept in `state.json` (`cards`), a code execution card's with its
//! request in `approvals.json`.

use anyhow::Result;
use serde_json::Value;

use super::Warden;
use super::approvals::{Outcome, Request};
use super::grants::{compact_duration, unix_now};
use super::state::{Answer, EgressCard};
use crate::on_host::audit;
use crate::on_host::bootstrap::client::segment;

/// A denial card can be answered by a reaction for a day...
pub const CARD_ANSWER_SECS: u64 = 86_400;
/// ...and is remembered for a day more, so a late reaction is answered
/// with why rather than ignored.
pub const CARD_KEEP_SECS: u64 = 2 * 86_400;

/// What a reaction says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// ✅ or 👍: allow, approve.
    Yes,
    /// ❌ or 👎: deny, refuse.
    No,
}

/// The verdict of a reaction's key; none for any other emoji or text.
/// Clients add variation selectors (`👍️`) and skin tones: ignored.
pub fn verdict(key: &str) -> Option<Verdict> {
    let bare: String = key
        .chars()
        .filter(|c| !matches!(c, '\u{fe0e}' | '\u{fe0f}' | '\u{1f3fb}'..='\u{1f3ff}'))
        .collect();
    match bare.as_str() {
        "\u{2705}" | "\u{1f44d}" => Some(Verdict::Yes),
        "\u{274c}" | "\u{1f44e}" => Some(Verdict::No),
        _ => None,
    }
}

/// A reaction's annotated event and key; none for anything else.
pub fn annotation(event: &Value) -> Option<(&str, &str)> {
    let relates = event.get("content")?.get("m.relates_to")?;
    if relates.get("rel_type")?.as_str()? != "m.annotation" {
        return None;
    }
    Some((relates.get("event_id")?.as_str()?, relates.get("key")?.as_str()?))
}

/// Whether a denial card can still be answered at `now`, and if not, why.
pub fn answerable(card: &EgressCard, now: u64) -> Result<(), String> {
    let (sandbox, host) = (&card.sandbox, &card.host);
    let typed = format!("`!allow {sandbox} {host} [duration]` or `!deny {sandbox} {host}`");
    if let Some(answer) = &card.answered {
        return Err(format!(
            "this card was already answered by {} at {} ({}); the first answer stands, type {typed} to change it",
            answer.by,
            audit::rfc3339(answer.at),
            answer.what
        ));
    }
    if now >= card.posted + CARD_ANSWER_SECS {
        return Err(format!(
            "this card was posted at {}, more than a day ago; type {typed} if it is still wanted",
            audit::rfc3339(card.posted)
        ));
    }
    Ok(())
}

/// A card the warden remembers.
enum Card {
    Egress(EgressCard),
    Approval(String, Request),
}

impl Card {
    /// The audit subject (as the command's records have it) and what the
    /// card is, in words.
    fn describe(&self) -> (String, String) {
        match self {
            Card::Egress(card) => (
                card.host.clone(),
                format!("the egress denial card {} → {}", card.sandbox, card.host),
            ),
            Card::Approval(id, request) => (
                id.clone(),
                format!("the card of code execution request {id} ({})", request.what),
            ),
        }
    }
}

impl Warden<'_> {
    /// An `m.reaction` seen in a room the warden watches.
    pub(super) fn handle_reaction(&mut self, room_id: &str, event: &Value) -> Result<()> {
        // Cards are posted in the ops room only.
        if room_id != self.ops {
            return Ok(());
        }
        // `sender` is the homeserver's: it authenticated whoever reacted.
        let sender = event
            .get("sender")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let Some((target, key)) = annotation(event) else {
            return Ok(());
        };
        let (target, key) = (target.to_string(), key.to_string());
        let Some(verdict) = verdict(&key) else {
            return Ok(());
        };
        if sender == self.me {
            return Ok(());
        }
        let admin = self.admins.contains(&sender);
        let card = match self.card(&target) {
            Some(card) => card,
            // One of the warden's own notices, but no card it remembers (a
            // health notice, or a card forgotten after its time): the
            // admin meant something, so they hear that it did nothing. A
            // card's id is saved just after it is posted: asked again once
            // the event is fetched.
            None if admin && self.is_own_event(room_id, &target)? => match self.card(&target) {
                Some(card) => card,
                None => {
                    let why = "that notice is not a card the warden remembers (a denial card is answered for a day, a code execution card until its request ends); nothing done";
                    self.audit(
                        "reaction.refused",
                        &sender,
                        &target,
                        &format!("{key} on the warden's notice {target}: {why}"),
                    )?;
                    self.post(room_id, &format!("not done: {why}"), Some(&target))?;
                    return Ok(());
                }
            },
            None => return Ok(()),
        };
        let (subject, described) = card.describe();
        if !admin {
            let detail = format!("not an admin: {key} on {described} ({target})");
            return self.audit("reaction.refused", &sender, &subject, &detail);
        }
        let reply = match card {
            Card::Approval(id, _) => {
                let (outcome, word) = match verdict {
                    Verdict::Yes => (Outcome::Approved, "!approve"),
                    Verdict::No => (Outcome::Refused, "!refuse"),
                };
                let detail = format!("{key} on {described} ({target}): as `{word} {id}`");
                self.audit("reaction", &sender, &subject, &detail)?;
                self.decide_approval(&sender, &id, outcome, None)?
            }
            Card::Egress(card) => self.answer_egress_card(&sender, &target, &key, verdict, card, &described)?,
        };
        self.post(room_id, &reply, Some(&target))?;
        Ok(())
    }

    /// An admin's reaction on a denial card: `!allow` for the default
    /// duration, or `!deny`, when the card is still open.
    fn answer_egress_card(
        &mut self,
        admin: &str,
        target: &str,
        key: &str,
        verdict: Verdict,
        card: EgressCard,
        described: &str,
    ) -> Result<String> {
        let now = unix_now();
        if let Err(why) = answerable(&card, now) {
            let detail = format!("{key} on {described} ({target}): {why}");
            self.audit("reaction.refused", admin, &card.host, &detail)?;
            return Ok(format!("not done: {why}"));
        }
        let (sandbox, host) = (card.sandbox.as_str(), card.host.as_str());
        let (what, typed) = match verdict {
            Verdict::Yes => (
                "allow",
                format!(
                    "!allow {sandbox} {host} {}",
                    compact_duration(self.grant_policy.default_secs)
                ),
            ),
            Verdict::No => ("deny", format!("!deny {sandbox} {host}")),
        };
        let detail = format!("{key} on {described} ({target}): as `{typed}`");
        self.audit("reaction", admin, host, &detail)?;
        // The first answer is the card's, whatever the grant's checks
        // say of it; saved with the grant (`allow` saves the state).
        if let Some(open) = self.state.cards.get_mut(target) {
            open.answered = Some(Answer {
                by: admin.to_string(),
                what: what.to_string(),
                at: now,
            });
        }
        match verdict {
            Verdict::Yes => self.allow(admin, sandbox, host, None),
            Verdict::No => self.deny(admin, sandbox, host),
        }
    }

    /// The card posted as `event`, if the warden remembers one.
    fn card(&self, event: &str) -> Option<Card> {
        if let Some(card) = self.state.cards.get(event) {
            return Some(Card::Egress(card.clone()));
        }
        let (id, request) = self.approvals.as_ref()?.by_card(event)?;
        Some(Card::Approval(id, request))
    }

    /// Whether `event` in `room_id` was sent by the warden's account.
    fn is_own_event(&self, room_id: &str, event: &str) -> Result<bool> {
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", segment(room_id), segment(event));
        let reply = self.client.get(&path, Some(&self.token))?;
        Ok(reply.ok() && reply.str("sender") == Some(self.me.as_str()))
    }

    /// Denial cards past the time they are remembered are forgotten.
    pub(super) fn forget_cards(&mut self) {
        let now = unix_now();
        self.state.cards.retain(|_, card| card.posted + CARD_KEEP_SECS > now);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn thumbs_and_checks_decide_and_other_emoji_do_not() {
        for yes in ["✅", "👍", "👍️", "👍🏽", "\u{2705}\u{fe0f}"] {
            assert_eq!(verdict(yes), Some(Verdict::Yes), "{yes}");
        }
        for no in ["❌", "👎", "👎🏿", "❌️"] {
            assert_eq!(verdict(no), Some(Verdict::No), "{no}");
        }
        for other in ["", "♾️", "👀", "✔️", "👍👍", "yes", "✅ please", "🏽"] {
            assert_eq!(verdict(other), None, "{other}");
        }
    }

    #[test]
    fn only_an_annotation_is_a_reaction() {
        let event = |rel: Value| json!({ "type": "m.reaction", "content": { "m.relates_to": rel } });
        let reaction = event(json!({ "rel_type": "m.annotation", "event_id": "$card", "key": "✅" }));
        assert_eq!(annotation(&reaction), Some(("$card", "✅")));
        let reply = event(json!({ "rel_type": "m.thread", "event_id": "$card", "key": "✅" }));
        assert_eq!(annotation(&reply), None);
        assert_eq!(annotation(&json!({ "content": {} })), None);
        let keyless = event(json!({ "rel_type": "m.annotation", "event_id": "$card" }));
        assert_eq!(annotation(&keyless), None);
    }

    #[test]
    fn a_denial_card_is_answered_once_and_for_a_day() {
        let mut card = EgressCard {
            sandbox: "balthasar".into(),
            host: "pypi.org".into(),
            posted: 1000,
            answered: None,
        };
        assert!(answerable(&card, 1000).is_ok());
        assert!(answerable(&card, 1000 + CARD_ANSWER_SECS - 1).is_ok());
        let late = answerable(&card, 1000 + CARD_ANSWER_SECS).unwrap_err();
        assert!(late.contains("more than a day ago"), "{late}");
        assert!(late.contains("`!allow balthasar pypi.org [duration]`"), "{late}");
        card.answered = Some(Answer {
            by: "@gendo:magi".into(),
            what: "allow".into(),
            at: 1001,
        });
        let again = answerable(&card, 1002).unwrap_err();
        assert!(again.contains("already answered by @gendo:magi"), "{again}");
        assert!(again.contains("the first answer stands"), "{again}");
    }
}
