//! The warden's side of backups (docs/backup.md): after each poll it reads
//! the result `appliance backup cleanup` recorded for the last run; a run
//! it has not seen yet becomes one audit record, and a failed one also one
//! ops-room notice. The run's end time is saved in the state, so a restart
//! neither repeats nor skips one; a failure from before the warden's first
//! start is still reported (backups failing is news whenever it is found).

use anyhow::Result;

use super::Warden;
use crate::on_host::backup::read_status;

impl Warden<'_> {
    pub(super) fn watch_backups(&mut self) -> Result<()> {
        let Some(path) = self.backup_status.clone() else {
            return Ok(());
        };
        let status = match read_status(&path) {
            Ok(Some(status)) => status,
            // No run yet.
            Ok(None) => return Ok(()),
            // A half-written file cannot be (it is renamed into place);
            // anything else is said in the log and tried again next poll.
            Err(error) => {
                (self.log)(format!("backup status unreadable: {error:#}"));
                return Ok(());
            }
        };
        if self.state.backup_finished.is_some_and(|seen| seen >= status.finished) {
            return Ok(());
        }
        let exit = status
            .exit_status
            .as_ref()
            .map(|s| format!(", exit status {s}"))
            .unwrap_or_default();
        let subject = crate::schema::backup::UNIT;
        if status.ok {
            self.audit(
                "backup.ok",
                "warden",
                subject,
                &format!("finished at {}", status.finished),
            )?;
        } else {
            let detail = format!("{}{exit}, finished at {}", status.service_result, status.finished);
            self.audit("backup.failed", "warden", subject, &detail)?;
            self.ops_notice(&format!(
                "backup failed ({}{exit}): nothing new is in the repository since the last good run. \
                 On the Matrix host: `journalctl -u {subject}`, then `appliance backup now`.",
                status.service_result
            ))?;
        }
        self.state.backup_finished = Some(status.finished);
        self.state.save(&self.state_path)
    }
}
