//! Egress grants (docs/warden.md, "Egress grants"): `!allow <agent> <host>
//! [duration]` lets one domain-list sandbox of this host reach one more host
//! name through the egress proxy until it expires; `!deny` records a
//! refusal and drops an open grant; `!grants` lists them.
//!
//! The proxy reads each grantable sandbox's file of granted names (squid's
//! `grants_<name>` ACL, after `never_dst`, so a grant never reaches a
//! private, loopback, link-local or metadata address). The warden keeps the
//! grants in `state.json`, saved *before* the file is written: a grant the
//! file holds is always one the warden knows and will expire, also after a
//! crash between the two. At start it writes every file again from the
//! state, so a grant that expired while it was down is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::on_host::atomic;
use anyhow::{Context, Result};

use super::Warden;
use super::state::Grant;
use crate::common::grants::{
    DEFAULT_GRANT_MAX_SECS, DEFAULT_GRANT_SECS, check_host, describe_duration, parse_duration,
};
use crate::on_host::audit;
use crate::schema::plan::{EgressGrants, Plan};

/// How long the proxy's reload may take before the warden gives up on it.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The default `--proxy-reload`: nixpkgs' squid unit reloads with SIGHUP,
/// and squid then reads its configuration, and the grant files, again.
pub const DEFAULT_PROXY_RELOAD: &str = "systemctl reload squid.service";

/// What the warden knows of grants from the plan and its options.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Agent user id -> its sandbox and grant file, or why it has none.
    pub agents: BTreeMap<String, Result<(String, PathBuf), String>>,
    pub default_secs: u64,
    pub max_secs: u64,
    /// The program and arguments that make the proxy read the files again.
    pub reload: Vec<String>,
}

impl Policy {
    /// From the plan; `dir` puts every grant file in another directory
    /// (named as its sandbox), for a proxy that reads them there.
    pub fn new(plan: &Plan, dir: Option<&Path>, reload: &str) -> Policy {
        let agents = plan
            .accounts
            .iter()
            .filter_map(|a| {
                let grants = match a.egress_grants.as_ref()? {
                    EgressGrants::File { sandbox, path } => Ok((
                        sandbox.clone(),
                        dir.map_or_else(|| PathBuf::from(path), |d| d.join(sandbox)),
                    )),
                    EgressGrants::Refused(why) => Err(why.clone()),
                };
                Some((a.user_id.clone(), grants))
            })
            .collect();
        Policy {
            agents,
            default_secs: plan.grants.map_or(DEFAULT_GRANT_SECS, |g| g.default_secs),
            max_secs: plan.grants.map_or(DEFAULT_GRANT_MAX_SECS, |g| g.max_secs),
            reload: reload.split_whitespace().map(str::to_string).collect(),
        }
    }

    /// Sandbox -> its grant file.
    fn files(&self) -> BTreeMap<String, PathBuf> {
        self.agents.values().filter_map(|g| g.as_ref().ok().cloned()).collect()
    }

    /// Whether `sandbox` has a grant file (an agent's sandbox is named as
    /// the agent, so its name is also what `!allow` takes).
    pub fn grantable(&self, sandbox: &str) -> bool {
        self.files().contains_key(sandbox)
    }
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A duration in one unit that `!allow` reads back (`90m`, not `1h 30m`).
pub fn compact_duration(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Takes out of `grants` every grant whose end has come at `now` (and
/// sandboxes left with none): (sandbox, host, grant), in order.
pub fn take_expired(grants: &mut BTreeMap<String, BTreeMap<String, Grant>>, now: u64) -> Vec<(String, String, Grant)> {
    let mut expired = Vec::new();
    for (sandbox, hosts) in grants.iter_mut() {
        hosts.retain(|host, grant| {
            let live = grant.until > now;
            if !live {
                expired.push((sandbox.clone(), host.clone(), grant.clone()));
            }
            live
        });
    }
    grants.retain(|_, hosts| !hosts.is_empty());
    expired
}

/// The grant file's text: the names, sorted, one a line (squid's
/// `dstdomain` file: exact names, since none starts with a dot).
pub fn file_text(hosts: &BTreeMap<String, Grant>) -> String {
    hosts.keys().map(|h| format!("{h}\n")).collect()
}

/// Replaces `path` with `text` unless it holds that already: a new file
/// beside it, 0644 (squid reads it as its own user), synced, renamed over
/// it, the directory synced. True when it changed.
pub fn write_file(path: &Path, text: &str) -> Result<bool> {
    match fs::read_to_string(path) {
        Ok(old) if old == text => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", path.display())),
    }
    // 0644: squid reads it as its own user.
    atomic::replace(path, text.as_bytes(), Some(0o644))?;
    Ok(true)
}

impl Warden<'_> {
    /// At start: drops what expired while the warden was away, and grants
    /// of sandboxes the plan no longer lets be granted, then writes every
    /// grant file from the state (reloading the proxy when one changed).
    pub(super) fn restore_grants(&mut self) -> Result<()> {
        let files = self.grant_policy.files();
        let gone: Vec<String> = self
            .state
            .grants
            .keys()
            .filter(|s| !files.contains_key(*s))
            .cloned()
            .collect();
        for sandbox in gone {
            for (host, grant) in self.state.grants.remove(&sandbox).unwrap_or_default() {
                let detail = format!(
                    "for {sandbox}, given by {}: the plan no longer lets {sandbox} be granted",
                    grant.by
                );
                self.audit("grant.dropped", "warden", &host, &detail)?;
            }
        }
        self.expire_grants()?;
        let sandboxes: BTreeSet<String> = files.keys().cloned().collect();
        self.publish_grants(&sandboxes)?;
        Ok(())
    }

    /// After each poll: every grant whose time is up goes, from the state,
    /// then from the proxy's files; audited `grant.expired`, and said in
    /// the ops room.
    pub(super) fn expire_grants(&mut self) -> Result<()> {
        let expired = take_expired(&mut self.state.grants, unix_now());
        if expired.is_empty() {
            return Ok(());
        }
        self.state.save(&self.state_path)?;
        let sandboxes: BTreeSet<String> = expired.iter().map(|(s, _, _)| s.clone()).collect();
        let published = self.publish_grants(&sandboxes)?;
        let mut said = Vec::new();
        for (sandbox, host, grant) in expired {
            let detail = format!(
                "for {sandbox}, given by {} at {}, ended {}",
                grant.by,
                audit::rfc3339(grant.since),
                audit::rfc3339(grant.until)
            );
            self.audit("grant.expired", "warden", &host, &detail)?;
            said.push(format!("{sandbox} → {host}"));
        }
        self.ops_notice(&format!("egress grant expired: {}{published}", said.join(", ")))
    }

    /// Writes the grant files of `sandboxes` from the state; reloads the
    /// proxy when one changed. What to add to a reply: empty, or why the
    /// proxy does not have them yet.
    fn publish_grants(&mut self, sandboxes: &BTreeSet<String>) -> Result<String> {
        let files = self.grant_policy.files();
        let mut changed = false;
        let mut problems = Vec::new();
        for sandbox in sandboxes {
            let Some(path) = files.get(sandbox) else { continue };
            let text = file_text(self.state.grants.get(sandbox).unwrap_or(&BTreeMap::new()));
            match write_file(path, &text) {
                Ok(did) => changed |= did,
                Err(error) => {
                    let error = format!("{error:#}");
                    self.audit("grant.unwritable", "warden", &path.display().to_string(), &error)?;
                    problems.push(format!("cannot write the grant file of {sandbox}: {error}"));
                }
            }
        }
        if changed && let Err(error) = self.reload_proxy() {
            let error = format!("{error:#}");
            let program = self.grant_policy.reload.join(" ");
            self.audit("proxy.reload_failed", "warden", &program, &error)?;
            problems.push(format!(
                "the proxy was not reloaded ({error}); it reads the file at its next reload"
            ));
        }
        Ok(if problems.is_empty() {
            String::new()
        } else {
            format!("; but {}", problems.join("; "))
        })
    }

    fn reload_proxy(&self) -> Result<()> {
        let Some((program, args)) = self.grant_policy.reload.split_first() else {
            anyhow::bail!("`--proxy-reload` is empty");
        };
        super::docker::run_program(program, args, RELOAD_TIMEOUT).map(|_| ())
    }

    /// The agent's sandbox and grant file, or the answer why not.
    fn grantable_agent(&self, agent: &str) -> Result<(String, String, PathBuf), String> {
        let user = self.agent_named(agent)?;
        match self.grant_policy.agents.get(&user) {
            Some(Ok((sandbox, path))) => Ok((user, sandbox.clone(), path.clone())),
            Some(Err(why)) => Err(format!("{user} cannot be granted egress: {why}")),
            None => Err(format!("{user} cannot be granted egress: the plan says nothing of it")),
        }
    }

    /// `!allow <agent> <host> [duration]`.
    pub(super) fn allow(&mut self, admin: &str, agent: &str, host: &str, duration: Option<&str>) -> Result<String> {
        let refuse = |w: &mut Self, why: String| -> Result<String> {
            w.audit("grant.refused", admin, host, &format!("`!allow {agent}`: {why}"))?;
            Ok(format!("not granted: {why}"))
        };
        let (user, sandbox, _) = match self.grantable_agent(agent) {
            Ok(found) => found,
            Err(why) => return refuse(self, why),
        };
        let host = match check_host(host) {
            Ok(host) => host,
            Err(why) => return refuse(self, why),
        };
        let secs = match duration.map(parse_duration) {
            None => self.grant_policy.default_secs,
            Some(Ok(secs)) if secs <= self.grant_policy.max_secs => secs,
            Some(Ok(secs)) => {
                let why = format!(
                    "{} is longer than the longest grant, {} (`grant-max` in the spec)",
                    describe_duration(secs),
                    describe_duration(self.grant_policy.max_secs)
                );
                return refuse(self, why);
            }
            Some(Err(why)) => return refuse(self, why),
        };
        let now = unix_now();
        let grant = Grant {
            by: admin.to_string(),
            since: now,
            until: now + secs,
        };
        let renewed = self
            .state
            .grants
            .entry(sandbox.clone())
            .or_default()
            .insert(host.clone(), grant.clone())
            .is_some();
        // Saved before the file: the file never holds a grant the state
        // does not, which would never expire.
        self.state.save(&self.state_path)?;
        let published = self.publish_grants(&BTreeSet::from([sandbox.clone()]))?;
        let until = audit::rfc3339(grant.until);
        let what = if renewed { "renewed" } else { "granted" };
        let detail = format!(
            "{what} for {sandbox} ({user}) for {}, until {until}",
            describe_duration(secs)
        );
        self.audit("grant", admin, &host, &detail)?;
        Ok(format!(
            "{what}: {sandbox} may reach {host} (ports 80 and 443, through the egress proxy) for {}, until {until}; never a private, loopback, link-local or metadata address{published}",
            describe_duration(secs)
        ))
    }

    /// `!deny <agent> <host>`: a refusal on record; an open grant ends now.
    pub(super) fn deny(&mut self, admin: &str, agent: &str, host: &str) -> Result<String> {
        let (user, sandbox, _) = match self.grantable_agent(agent) {
            Ok(found) => found,
            Err(why) => {
                // Nothing to drop, but the refusal is still the admin's word.
                self.audit("grant.denied", admin, host, &format!("`!deny {agent}`: {why}"))?;
                return Ok(format!("refusal recorded; {why}"));
            }
        };
        // A name no grant could have is still recorded as refused (shown
        // escaped: it is whatever the admin typed).
        let host = check_host(host).unwrap_or_else(|_| host.escape_debug().to_string());
        let dropped = self
            .state
            .grants
            .get_mut(&sandbox)
            .and_then(|hosts| hosts.remove(&host));
        self.state.grants.retain(|_, hosts| !hosts.is_empty());
        let (detail, reply) = match &dropped {
            Some(grant) => {
                self.state.save(&self.state_path)?;
                let published = self.publish_grants(&BTreeSet::from([sandbox.clone()]))?;
                (
                    format!(
                        "refused for {sandbox} ({user}); its open grant (by {}, until {}) ended",
                        grant.by,
                        audit::rfc3339(grant.until)
                    ),
                    format!("refused: {sandbox} → {host}; its open grant ended now{published}"),
                )
            }
            None => (
                format!("refused for {sandbox} ({user}); no grant was open"),
                format!("refused: {sandbox} → {host} (no grant was open)"),
            ),
        };
        self.audit("grant.denied", admin, &host, &detail)?;
        Ok(reply)
    }

    /// `!grants`: what is open, with the time left.
    pub(super) fn grants_status(&self) -> String {
        let now = unix_now();
        let mut lines = Vec::new();
        for (sandbox, hosts) in &self.state.grants {
            for (host, grant) in hosts {
                lines.push(format!(
                    "{sandbox} → {host}: {} left (until {}), given by {}",
                    describe_duration(grant.until.saturating_sub(now)),
                    audit::rfc3339(grant.until),
                    grant.by
                ));
            }
        }
        let grantable: Vec<String> = self.grant_policy.files().into_keys().collect();
        let head = if lines.is_empty() {
            "no open egress grants".to_string()
        } else {
            format!("open egress grants ({}):", lines.len())
        };
        let tail = format!(
            "grantable: {} (default {}, at most {})",
            if grantable.is_empty() {
                "no agent".to_string()
            } else {
                grantable.join(", ")
            },
            describe_duration(self.grant_policy.default_secs),
            describe_duration(self.grant_policy.max_secs)
        );
        std::iter::once(head)
            .chain(lines)
            .chain(std::iter::once(tail))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The hint a denial notice carries: how to grant what was refused.
    pub(super) fn grant_hint(&self, sandbox: &str, destination: &str) -> Option<String> {
        if !self.grant_policy.grantable(sandbox) {
            return None;
        }
        let host = check_host(destination).ok()?;
        Some(format!(
            "`!allow {sandbox} {host} {}`",
            compact_duration(self.grant_policy.default_secs)
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn grant(until: u64) -> Grant {
        Grant {
            by: "@gendo:magi".into(),
            since: 1,
            until,
        }
    }

    #[test]
    fn grants_end_at_their_time_and_not_before() {
        let mut grants = BTreeMap::from([
            (
                "balthasar".to_string(),
                BTreeMap::from([
                    ("a.example.org".to_string(), grant(100)),
                    ("b.example.org".to_string(), grant(200)),
                ]),
            ),
            (
                "other".to_string(),
                BTreeMap::from([("c.example.org".to_string(), grant(100))]),
            ),
        ]);
        assert!(take_expired(&mut grants, 99).is_empty());
        let ended = take_expired(&mut grants, 100);
        let names: Vec<(&str, &str)> = ended.iter().map(|(s, h, _)| (s.as_str(), h.as_str())).collect();
        assert_eq!(names, [("balthasar", "a.example.org"), ("other", "c.example.org")]);
        // A sandbox left with none is gone; the other grant stays.
        assert_eq!(grants.keys().collect::<Vec<_>>(), ["balthasar"]);
        assert_eq!(file_text(&grants["balthasar"]), "b.example.org\n");
        assert_eq!(take_expired(&mut grants, u64::MAX).len(), 1);
        assert!(grants.is_empty());
    }

    #[test]
    fn a_grant_file_lists_the_names_one_a_line() {
        let hosts = BTreeMap::from([
            ("pypi.org".to_string(), grant(9)),
            ("files.example.org".to_string(), grant(9)),
        ]);
        assert_eq!(file_text(&hosts), "files.example.org\npypi.org\n");
        assert_eq!(file_text(&BTreeMap::new()), "");
    }

    #[test]
    fn a_grant_file_is_replaced_whole_and_readable_by_the_proxy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("balthasar");
        assert!(write_file(&path, "pypi.org\n").unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "pypi.org\n");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        // Unchanged: no write, so no reload.
        assert!(!write_file(&path, "pypi.org\n").unwrap());
        assert!(write_file(&path, "").unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        // Nothing left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn hints_name_durations_that_allow_reads_back() {
        for secs in [45, 60, 1800, 3600, 5400, 86_400, 90_000] {
            let text = compact_duration(secs);
            assert_eq!(parse_duration(&text), Ok(secs), "{text}");
        }
        assert_eq!(compact_duration(3600), "1h");
        assert_eq!(compact_duration(5400), "90m");
    }

    #[test]
    fn the_policy_reads_each_agents_grant_file_or_why_it_has_none() {
        let plan = crate::test_support::shipped_plan();
        let policy = Policy::new(&plan, None, DEFAULT_PROXY_RELOAD);
        assert_eq!(policy.reload, ["systemctl", "reload", "squid.service"]);
        let balthasar = &policy.agents[&format!("@balthasar:{}", plan.homeserver.server_name)];
        assert_eq!(
            balthasar,
            &Ok((
                "balthasar".to_string(),
                PathBuf::from("/var/lib/appliance/egress-grants/balthasar")
            ))
        );
        let casper = &policy.agents[&format!("@casper:{}", plan.homeserver.server_name)];
        assert!(casper.as_ref().unwrap_err().contains("`web`"), "{casper:?}");
        let moved = Policy::new(&plan, Some(Path::new("/tmp/g")), "squid -k reconfigure");
        assert_eq!(moved.files()["balthasar"], PathBuf::from("/tmp/g/balthasar"));
        assert_eq!((moved.default_secs, moved.max_secs), (3600, 86_400));
    }
}
