//! Code execution approvals (docs/warden.md, "Code execution approvals"):
//! what the broker (`broker.rs`) holds waits here for an admin's
//! `!approve <id>` or `!refuse <id>` in a room the warden watches.
//!
//! The rules: only the plan's admins decide, as Synapse authenticated the
//! sender (the caller checks, as for every command); the first decision
//! wins; a decision on an unknown, decided or expired request is refused
//! and audited. A request is saved in `approvals.json` before its card is
//! posted, so a warden restart never loses one; but the agent's connection
//! ends with the process that held it, so a request of an earlier run can
//! only be refused or expire, never be approved (nothing would carry it).
//!
//! The broker's threads and the warden's loop share [`Shared`]: a mutex
//! over the file's contents and the ids whose connection is still held
//! here, and a condition variable the loop wakes them with.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Warden;
use super::grants::unix_now;
use crate::on_host::audit;

/// The file, beside `state.json`: written by the broker's threads too, so
/// not part of the loop's state.
pub const APPROVALS_FILE: &str = "approvals.json";

/// The default `--approval-timeout`: how long a request waits for an
/// admin before it is refused.
pub const APPROVAL_TIMEOUT_SECS: u64 = 300;

/// Decided requests are kept this long, so a late `!approve` is answered
/// with what happened rather than "unknown".
const KEEP_DECIDED_SECS: u64 = 86_400;

/// The longest standing approval (`!approve c3 15m`): an admin who wants
/// more approves again, having looked.
pub const STANDING_MAX_SECS: u64 = 3600;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approvals {
    /// The number of the next request (`c<n>`), never reused.
    pub next: u64,
    pub requests: BTreeMap<String, Request>,
    /// Standing approvals by code sandbox: its later requests run without
    /// a card until `until` (one agent runs a command as several Docker
    /// calls: a container, then an exec per step).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub standing: BTreeMap<String, Standing>,
}

/// `!approve <id> <duration>`: who approved which request, and until when
/// the same code sandbox's requests run without asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    pub by: String,
    pub id: String,
    pub until: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The agent's user id, and its code sandbox.
    pub agent: String,
    pub sandbox: String,
    /// What it asked, as the card shows it (escaped, shortened).
    pub what: String,
    /// Unix seconds: asked at, refused at when no admin decided.
    pub since: u64,
    pub until: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The event id of its card in the ops room, once posted: an admin's
    /// reaction on it decides as `!approve`/`!refuse` do (reactions.rs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// The admin, or `warden` for an expiry.
    pub by: String,
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Approved,
    Refused,
    Expired,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Approved => "approved",
            Outcome::Refused => "refused",
            Outcome::Expired => "expired",
        }
    }
}

impl Approvals {
    pub fn load(path: &Path) -> Result<Approvals> {
        match fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| {
                format!(
                    "failed to parse `{}`\nhint: it is the warden's own file of code execution approvals; remove it to start afresh (pending requests are then forgotten, and their agents were refused anyway)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Approvals::default()),
            Err(e) => Err(e).with_context(|| format!("failed to read `{}`", path.display())),
        }
    }

    /// Atomically, as `state.json` (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).context("failed to serialize approvals")? + "\n";
        super::grants::write_file(path, &text).map(|_| ())
    }
}

/// What an admin's word does to request `id`, or why it does nothing.
/// `live`: a connection of this run still waits on it. Pure, so the rules
/// are tested without a homeserver.
pub fn decide(
    approvals: &mut Approvals,
    live: &BTreeSet<String>,
    id: &str,
    (outcome, standing): (Outcome, Option<u64>),
    admin: &str,
    now: u64,
) -> Result<Request, String> {
    let shown = id.escape_debug().to_string();
    let Some(request) = approvals.requests.get_mut(id) else {
        return Err(format!("no code execution request `{shown}`"));
    };
    if let Some(decision) = &request.decision {
        return Err(format!(
            "request {id} was already {} by {} at {}; the first decision stands",
            decision.outcome.word(),
            decision.by,
            audit::rfc3339(decision.at)
        ));
    }
    if now >= request.until {
        return Err(format!(
            "request {id} expired at {}; it was refused, and the agent must ask again",
            audit::rfc3339(request.until)
        ));
    }
    if outcome == Outcome::Approved && !live.contains(id) {
        return Err(format!(
            "request {id} cannot be approved: the agent's connection ended with the warden's restart, so nothing would run it; `!refuse {id}` records a refusal, and the agent must ask again"
        ));
    }
    request.decision = Some(Decision {
        outcome,
        by: admin.to_string(),
        at: now,
    });
    let request = request.clone();
    if let (Outcome::Approved, Some(secs)) = (outcome, standing) {
        let standing = Standing {
            by: admin.to_string(),
            id: id.to_string(),
            until: now + secs.min(STANDING_MAX_SECS),
        };
        approvals.standing.insert(request.sandbox.clone(), standing);
    }
    Ok(request)
}

/// The standing approval of `sandbox`'s requests at `now`, if one holds.
pub fn standing_for<'a>(approvals: &'a Approvals, sandbox: &str, now: u64) -> Option<&'a Standing> {
    approvals.standing.get(sandbox).filter(|s| now < s.until)
}

/// Requests no connection of this run waits on whose time is up: marked
/// expired and returned. A live one's own thread expires it.
pub fn take_expired(approvals: &mut Approvals, live: &BTreeSet<String>, now: u64) -> Vec<(String, Request)> {
    let mut expired = Vec::new();
    for (id, request) in &mut approvals.requests {
        if request.decision.is_none() && !live.contains(id) && now >= request.until {
            request.decision = Some(Decision {
                outcome: Outcome::Expired,
                by: "warden".to_string(),
                at: now,
            });
            expired.push((id.clone(), request.clone()));
        }
    }
    expired
}

/// What the broker's threads and the warden's loop share.
pub struct Shared {
    path: PathBuf,
    inner: Mutex<Inner>,
    decided: Condvar,
}

pub struct Inner {
    pub approvals: Approvals,
    /// Requests whose agent's connection this process holds.
    pub live: BTreeSet<String>,
}

impl Shared {
    pub fn load(path: PathBuf) -> Result<Shared> {
        let approvals = Approvals::load(&path)?;
        Ok(Shared {
            path,
            inner: Mutex::new(Inner {
                approvals,
                live: BTreeSet::new(),
            }),
            decided: Condvar::new(),
        })
    }

    /// The lock; a thread that panicked holding it left consistent data
    /// (every change is one assignment before the save), so it is taken.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn save(&self, inner: &Inner) -> Result<()> {
        inner.approvals.save(&self.path)
    }

    /// The standing approval `sandbox`'s requests run under now, if any.
    pub fn standing(&self, sandbox: &str) -> Option<Standing> {
        standing_for(&self.lock().approvals, sandbox, unix_now()).cloned()
    }

    /// A new pending request, saved before anyone hears of it.
    pub fn open(&self, agent: &str, sandbox: &str, what: &str, timeout: Duration) -> Result<(String, Request)> {
        let mut inner = self.lock();
        inner.approvals.next += 1;
        let id = format!("c{}", inner.approvals.next);
        let now = unix_now();
        let request = Request {
            agent: agent.to_string(),
            sandbox: sandbox.to_string(),
            what: what.to_string(),
            since: now,
            until: now + timeout.as_secs().max(1),
            decision: None,
            card: None,
        };
        inner.approvals.requests.insert(id.clone(), request.clone());
        inner.live.insert(id.clone());
        self.save(&inner)?;
        Ok((id, request))
    }

    /// Waits for a decision on `id` until its end; then expires it. The
    /// decision, and whether this call made it (an expiry to announce).
    pub fn wait(&self, id: &str) -> Result<(Decision, bool)> {
        let mut inner = self.lock();
        loop {
            let request = inner.approvals.requests.get(id).context("a pending request vanished")?;
            if let Some(decision) = request.decision.clone() {
                inner.live.remove(id);
                return Ok((decision, false));
            }
            let now = unix_now();
            if now >= request.until {
                let decision = Decision {
                    outcome: Outcome::Expired,
                    by: "warden".to_string(),
                    at: now,
                };
                if let Some(request) = inner.approvals.requests.get_mut(id) {
                    request.decision = Some(decision.clone());
                }
                inner.live.remove(id);
                self.save(&inner)?;
                return Ok((decision, true));
            }
            let left = Duration::from_secs(request.until - now);
            inner = self
                .decided
                .wait_timeout(inner, left.min(Duration::from_secs(1)))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Records the event id of `id`'s card, once it is posted.
    pub fn set_card(&self, id: &str, event: &str) -> Result<()> {
        let mut inner = self.lock();
        let Some(request) = inner.approvals.requests.get_mut(id) else {
            return Ok(());
        };
        request.card = Some(event.to_string());
        self.save(&inner)
    }

    /// The request whose card is `event`, if any is remembered.
    pub fn by_card(&self, event: &str) -> Option<(String, Request)> {
        let inner = self.lock();
        inner
            .approvals
            .requests
            .iter()
            .find(|(_, r)| r.card.as_deref() == Some(event))
            .map(|(id, r)| (id.clone(), r.clone()))
    }

    fn wake(&self) {
        self.decided.notify_all();
    }
}

impl Warden<'_> {
    /// `!approve <id> [duration]` / `!refuse <id>` from an admin (checked
    /// by the caller): the first decision wins; anything else is refused,
    /// with why, and audited as `approval.decision_refused`. An approval
    /// with a duration also stands for the code sandbox's later requests
    /// (audited `approval.standing`).
    pub(super) fn decide_approval(
        &mut self,
        admin: &str,
        id: &str,
        outcome: Outcome,
        standing: Option<u64>,
    ) -> Result<String> {
        let Some(shared) = self.approvals.clone() else {
            return Ok("no agent's code waits for approval on this appliance".to_string());
        };
        let decided = {
            let mut inner = shared.lock();
            let Inner { approvals, live } = &mut *inner;
            let decided = decide(approvals, live, id, (outcome, standing), admin, unix_now());
            if decided.is_ok() {
                shared.save(&inner)?;
            }
            decided
        };
        shared.wake();
        match decided {
            Ok(request) => {
                let word = outcome.word();
                let detail = format!("{} in {}: {}", request.agent, request.sandbox, request.what);
                self.audit(&format!("approval.{word}"), admin, id, &detail)?;
                let Some(until) = standing.and(self.standing_until(&request.sandbox)) else {
                    return Ok(format!("{word}: {id} ({detail})"));
                };
                let ends = audit::rfc3339(until);
                self.audit(
                    "approval.standing",
                    admin,
                    id,
                    &format!(
                        "{}'s requests in {} run without asking until {ends}",
                        request.agent, request.sandbox
                    ),
                )?;
                Ok(format!(
                    "{word}: {id} ({detail}); and {}'s later requests in {} until {ends}",
                    request.agent, request.sandbox
                ))
            }
            Err(why) => {
                let shown = id.escape_debug().to_string();
                self.audit("approval.decision_refused", admin, &shown, &why)?;
                Ok(format!("not done: {why}"))
            }
        }
    }

    fn standing_until(&self, sandbox: &str) -> Option<u64> {
        let shared = self.approvals.as_ref()?;
        Some(shared.lock().approvals.standing.get(sandbox)?.until)
    }

    /// After each poll: requests of an earlier run whose time is up are
    /// refused, audited and said in the ops room; decided ones older than a
    /// day are forgotten.
    pub(super) fn expire_approvals(&mut self) -> Result<()> {
        let Some(shared) = self.approvals.clone() else {
            return Ok(());
        };
        let (expired, ended) = {
            let mut inner = shared.lock();
            let Inner { approvals, live } = &mut *inner;
            let now = unix_now();
            let expired = take_expired(approvals, live, now);
            let ended: Vec<(String, Standing)> = approvals
                .standing
                .iter()
                .filter(|(_, s)| now >= s.until)
                .map(|(sandbox, s)| (sandbox.clone(), s.clone()))
                .collect();
            approvals.standing.retain(|_, s| now < s.until);
            let before = approvals.requests.len();
            approvals
                .requests
                .retain(|_, r| r.decision.as_ref().is_none_or(|d| d.at + KEEP_DECIDED_SECS > now));
            if !expired.is_empty() || !ended.is_empty() || approvals.requests.len() != before {
                shared.save(&inner)?;
            }
            (expired, ended)
        };
        for (sandbox, standing) in ended {
            let detail = format!(
                "from {} by {}, ended at {}",
                standing.id,
                standing.by,
                audit::rfc3339(standing.until)
            );
            self.audit("approval.standing_ended", "warden", &sandbox, &detail)?;
            self.ops_notice(&format!(
                "standing approval of {sandbox}'s code execution {detail}; each request asks again"
            ))?;
        }
        for (id, request) in expired {
            let detail = format!(
                "{} in {}: {}; no admin decided by {}",
                request.agent,
                request.sandbox,
                request.what,
                audit::rfc3339(request.until)
            );
            self.audit("approval.expired", "warden", &id, &detail)?;
            self.ops_notice(&format!("code execution request {id} expired, refused: {detail}"))?;
        }
        Ok(())
    }

    /// `!status`'s lines: the standing approvals, then the requests
    /// waiting for an admin.
    pub(super) fn approvals_status(&self) -> Vec<String> {
        let Some(shared) = &self.approvals else {
            return Vec::new();
        };
        let inner = shared.lock();
        let now = unix_now();
        let standing = inner
            .approvals
            .standing
            .iter()
            .filter(|(_, s)| now < s.until)
            .map(|(sandbox, s)| {
                format!(
                    "standing approval: {sandbox}'s code execution runs without asking until {} ({} by {})",
                    audit::rfc3339(s.until),
                    s.id,
                    s.by
                )
            });
        let pending = inner
            .approvals
            .requests
            .iter()
            .filter(|(_, r)| r.decision.is_none())
            .map(|(id, r)| {
                let note = if inner.live.contains(id) {
                    String::new()
                } else {
                    " (its connection ended with a warden restart: it can only be refused)".to_string()
                };
                format!(
                    "code execution request {id}: {} in {}: {}; until {}{note}",
                    r.agent,
                    r.sandbox,
                    r.what,
                    audit::rfc3339(r.until)
                )
            });
        standing.chain(pending).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(until: u64) -> Request {
        Request {
            agent: "@casper:magi".into(),
            sandbox: "casper-exec".into(),
            what: "create a container".into(),
            since: 0,
            until,
            decision: None,
            card: None,
        }
    }

    fn with(id: &str, request: Request) -> Approvals {
        Approvals {
            next: 1,
            requests: BTreeMap::from([(id.to_string(), request)]),
            ..Approvals::default()
        }
    }

    /// `@gendo:magi`, an admin, decides request `id` at `now`.
    fn gendo_decides(
        approvals: &mut Approvals,
        live: &BTreeSet<String>,
        id: &str,
        decision: (Outcome, Option<u64>),
        now: u64,
    ) -> Result<Request, String> {
        decide(approvals, live, id, decision, "@gendo:magi", now)
    }

    #[test]
    fn the_first_decision_wins_and_later_ones_are_refused() {
        let live = BTreeSet::from(["c1".to_string()]);
        let mut approvals = with("c1", pending(100));
        let done = gendo_decides(&mut approvals, &live, "c1", (Outcome::Approved, None), 10).unwrap();
        assert_eq!(done.decision.unwrap().outcome, Outcome::Approved);
        let late = decide(
            &mut approvals,
            &live,
            "c1",
            (Outcome::Refused, None),
            "@fuyutsuki:magi",
            11,
        )
        .unwrap_err();
        assert!(late.contains("already approved by @gendo:magi"), "{late}");
        assert_eq!(approvals.requests["c1"].decision.as_ref().unwrap().by, "@gendo:magi");
    }

    #[test]
    fn unknown_and_expired_requests_are_not_decided() {
        let live = BTreeSet::from(["c1".to_string()]);
        let mut approvals = with("c1", pending(100));
        let unknown = gendo_decides(&mut approvals, &live, "c9\n", (Outcome::Approved, None), 10).unwrap_err();
        assert!(unknown.contains("no code execution request `c9\\n`"), "{unknown}");
        let expired = gendo_decides(&mut approvals, &live, "c1", (Outcome::Approved, None), 100).unwrap_err();
        assert!(expired.contains("expired"), "{expired}");
        assert!(approvals.requests["c1"].decision.is_none());
    }

    #[test]
    fn a_request_of_an_earlier_run_is_never_approved_but_can_be_refused_or_expire() {
        let none = BTreeSet::new();
        let mut approvals = with("c1", pending(100));
        let why = gendo_decides(&mut approvals, &none, "c1", (Outcome::Approved, None), 10).unwrap_err();
        assert!(why.contains("restart"), "{why}");
        assert!(take_expired(&mut approvals, &none, 99).is_empty());
        let expired = take_expired(&mut approvals, &none, 100);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1.decision.as_ref().unwrap().outcome, Outcome::Expired);
        let mut approvals = with("c1", pending(100));
        assert!(gendo_decides(&mut approvals, &none, "c1", (Outcome::Refused, None), 10).is_ok());
        // A live one is its thread's to expire.
        let mut approvals = with("c1", pending(100));
        assert!(take_expired(&mut approvals, &BTreeSet::from(["c1".to_string()]), 200).is_empty());
    }

    #[test]
    fn a_standing_approval_covers_its_sandbox_until_its_end_and_no_longer_than_the_cap() {
        let live = BTreeSet::from(["c1".to_string(), "c2".to_string()]);
        let mut approvals = with("c1", pending(100));
        let mut other = pending(100);
        other.sandbox = "coder-exec".into();
        approvals.requests.insert("c2".into(), other);
        gendo_decides(&mut approvals, &live, "c1", (Outcome::Approved, Some(900)), 10).unwrap();
        let standing = standing_for(&approvals, "casper-exec", 909).unwrap();
        assert_eq!((standing.by.as_str(), standing.id.as_str()), ("@gendo:magi", "c1"));
        assert!(standing_for(&approvals, "casper-exec", 910).is_none(), "it ends");
        assert!(
            standing_for(&approvals, "coder-exec", 20).is_none(),
            "another sandbox still asks"
        );
        // A refusal never stands; a long one is cut to the cap.
        gendo_decides(&mut approvals, &live, "c2", (Outcome::Refused, Some(900)), 10).unwrap();
        assert!(standing_for(&approvals, "coder-exec", 20).is_none());
        let mut approvals = with("c1", pending(100));
        gendo_decides(&mut approvals, &live, "c1", (Outcome::Approved, Some(86_400)), 0).unwrap();
        assert_eq!(approvals.standing["casper-exec"].until, STANDING_MAX_SECS);
        // It is saved with the requests: a restart keeps it until its end.
        let text = serde_json::to_string(&approvals).unwrap();
        assert_eq!(serde_json::from_str::<Approvals>(&text).unwrap(), approvals);
    }

    #[test]
    fn requests_survive_a_reload_as_pending_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(APPROVALS_FILE);
        let shared = Shared::load(path.clone()).unwrap();
        let (first, _) = shared
            .open("@casper:magi", "casper-exec", "x", Duration::from_secs(60))
            .unwrap();
        let again = Shared::load(path).unwrap();
        let inner = again.lock();
        assert!(inner.approvals.requests[&first].decision.is_none());
        assert!(inner.live.is_empty());
        drop(inner);
        let (second, _) = again
            .open("@casper:magi", "casper-exec", "y", Duration::from_secs(60))
            .unwrap();
        assert_ne!(first, second);
    }
}
