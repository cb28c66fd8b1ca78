//! The warden's side of sandbox health: after each `/sync`, Docker's
//! events since the last poll become one ops-room notice (and one audit
//! record) per container, and `!status` gets a line per sandbox. Docker
//! failing never stops the warden: the Matrix work matters more.

use anyhow::Result;

use super::docker::{fold, now_ns, status_line};
use super::{Warden, owed};

impl Warden<'_> {
    /// Reports what the sandboxes did since the last poll. The window's end
    /// is saved in the state, so a restart neither repeats nor skips one.
    pub(super) fn watch_sandboxes(&mut self) -> Result<()> {
        let until = now_ns();
        let Some(last) = self.state.docker_until_ns else {
            // First start: what happened before the warden existed is old news.
            self.state.docker_until_ns = Some(until);
            return self.state.save(&self.state_path);
        };
        let since = last + 1;
        if until < since {
            return Ok(());
        }
        let events = match self.docker.events(&self.sandboxes, since, until) {
            Ok(events) => events,
            // The window is kept: once Docker answers, it is read then.
            Err(error) => return self.docker_failed(&format!("{error:#}")),
        };
        if self.docker_failing {
            self.docker_failing = false;
            (self.log)("docker answers again".to_string());
        }
        for episode in fold(&events) {
            let mut text = episode.text();
            if episode.dies > 0 {
                text.push_str(&self.unanswered_when_down(&episode.name));
            }
            self.audit(episode.kind(), "warden", &episode.name, &text)?;
            self.ops_notice(&text)?;
        }
        self.state.docker_until_ns = Some(until);
        self.state.save(&self.state_path)
    }

    /// What a dead sandbox's agent had not answered yet: an agent that
    /// resumes from the newest message after a restart (OpenClaw) never
    /// answers those, so the people who asked are told to ask again.
    fn unanswered_when_down(&self, sandbox: &str) -> String {
        let localpart = |user: &&String| user.strip_prefix('@').and_then(|u| u.split(':').next()) == Some(sandbox);
        let Some(agent) = self.agents.iter().find(localpart) else {
            return String::new();
        };
        match owed::unanswered(&self.state.owed, agent, now_ns() / 1_000_000) {
            0 => String::new(),
            n => format!(
                "; {n} mention(s) of {agent} from the last {} minutes had no answer when it went down: ask again if none comes",
                owed::WINDOW_MS / 60_000
            ),
        }
    }

    /// Audits the first failure of a run of them; the rest only wait.
    fn docker_failed(&mut self, why: &str) -> Result<()> {
        if self.docker_failing {
            return Ok(());
        }
        self.docker_failing = true;
        self.audit("docker.unavailable", "warden", &self.docker.program.clone(), why)
    }

    /// `!status`'s sandbox section: a line per agent's sandbox.
    pub(super) fn sandbox_status(&self) -> Vec<String> {
        match self.docker.sandboxes(&self.sandboxes) {
            Ok(found) => self
                .sandboxes
                .iter()
                .map(|name| status_line(name, found.get(name)))
                .collect(),
            Err(error) => vec![format!("sandboxes: unknown ({error:#})")],
        }
    }
}
