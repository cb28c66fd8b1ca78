//! `[backup]` as the model has it: validated, defaults resolved
//! (docs/backup.md). The Matrix host backs up with restic on this schedule.

use serde::Serialize;

/// `schedule` when the spec names none: systemd's `daily` (midnight).
pub const DEFAULT_SCHEDULE: &str = "daily";
/// Snapshots kept by `restic forget` when the spec names no number.
pub const DEFAULT_KEEP_DAILY: u32 = 7;
pub const DEFAULT_KEEP_WEEKLY: u32 = 4;
pub const DEFAULT_KEEP_MONTHLY: u32 = 6;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backup {
    /// restic's repository: an absolute path, `sftp:…` or `s3:https://…`.
    pub repository: String,
    /// Host paths (absolute), never contents: the secrets stay on the host.
    pub password_file: String,
    pub environment_file: Option<String>,
    /// A systemd `OnCalendar` expression.
    pub schedule: String,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}
