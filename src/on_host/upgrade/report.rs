//! What an upgrade says, besides the terminal: one `m.notice` in the ops
//! room (as the appliance account, like the warden's) and one record in
//! the warden's audit trail per start and end. Neither may stop the
//! upgrade or its rollback: a failure to report is said in the terminal.

use anyhow::Result;
use serde_json::json;

use super::journal::Journal;
use super::{Outcome, Upgrade};
use crate::on_host::audit::{self, Entry};
use crate::on_host::bootstrap::client::segment;

const ACTOR: &str = "appliance upgrade";

pub fn started(up: &Upgrade, journal: &Journal, say: &mut dyn FnMut(&str)) {
    let text = format!(
        "upgrade started: state snapshot `{}` of system generation {}; switching, then the health gate",
        journal.snapshot, journal.generation
    );
    tell(up, "upgrade.started", &text, say);
}

pub fn outcome(up: &Upgrade, outcome: &Outcome, say: &mut dyn FnMut(&str)) {
    let (kind, text) = match outcome {
        Outcome::Upgraded { from, to, snapshot } => (
            "upgrade.ok",
            format!(
                "upgrade done: system generation {from} -> {to}, the health gate passed (snapshot `{snapshot}` kept)"
            ),
        ),
        Outcome::RolledBack {
            generation,
            snapshot,
            failed,
            after,
        } => (
            "upgrade.rolled_back",
            format!(
                "upgrade FAILED: {}. Rolled back: the system to generation {generation}, the state to snapshot `{snapshot}` (the warden's directory kept: its state and audit trail). After the rollback: {}",
                failed.join("; "),
                if after.is_empty() {
                    "healthy, every agent answers".to_string()
                } else {
                    format!("still failing: {}", after.join("; "))
                }
            ),
        ),
    };
    tell(up, kind, &text, say);
}

pub fn rollback_failed(
    up: &Upgrade,
    journal: &Journal,
    failed: &[String],
    error: &anyhow::Error,
    say: &mut dyn FnMut(&str),
) {
    let text = format!(
        "upgrade FAILED ({}) and its ROLLBACK FAILED: {error:#}. On the Matrix host: `appliance upgrade` again finishes the rollback (to generation {}, snapshot `{}`)",
        failed.join("; "),
        journal.generation,
        journal.snapshot
    );
    tell(up, "upgrade.rollback_failed", &text, say);
}

/// The terminal, the audit trail, the ops room.
fn tell(up: &Upgrade, kind: &str, text: &str, say: &mut dyn FnMut(&str)) {
    say(text);
    let entry = Entry {
        kind,
        actor: ACTOR,
        subject: &up.plan.appliance,
        detail: text,
    };
    if let Err(error) = audit::append(&up.audit, &entry) {
        say(&format!(
            "could not write the audit trail `{}`: {error:#}",
            up.audit.display()
        ));
    }
    if let Err(error) = ops_notice(up, text) {
        say(&format!("could not post in the ops room: {error:#}"));
    }
}

fn ops_notice(up: &Upgrade, text: &str) -> Result<()> {
    let token = up.token()?;
    let client = up.client(std::time::Duration::from_secs(60));
    let alias = &up.plan.ops_room.alias;
    let found = client.get(
        &format!("/_matrix/client/v3/directory/room/{}", segment(alias)),
        Some(&token),
    )?;
    let room = found
        .str("room_id")
        .filter(|_| found.ok())
        .ok_or_else(|| anyhow::anyhow!("{alias} not found ({})", found.describe()))?
        .to_string();
    let txn = format!(
        "appliance-upgrade-{}-{}",
        std::process::id(),
        crate::on_host::backup::now_millis()
    );
    let sent = client.put(
        &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", segment(&room)),
        Some(&token),
        &json!({ "msgtype": "m.notice", "body": text }),
    )?;
    if !sent.ok() {
        anyhow::bail!("{}", sent.describe());
    }
    Ok(())
}
