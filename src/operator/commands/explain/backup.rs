//! The backup job in `appliance explain` (docs/backup.md): what it may
//! read and where it sends it, or that there is none.

use super::HostService;
use crate::generator::model::Appliance;

/// restic's job on the Matrix host, or, without `[backup]`, a line that
/// says nothing is backed up.
pub fn service(appliance: &Appliance) -> HostService {
    let host = appliance.matrix.host.clone();
    let Some(backup) = &appliance.backup else {
        return HostService {
            name: "backup: off".into(),
            host,
            runs_as: "nothing: the spec has no `[backup]`".into(),
            privileges: Vec::new(),
            why_outside: "-".into(),
            if_owned: vec![
                "nothing is backed up: losing this host loses the agents' memory, the rooms and accounts, and the secrets (add `[backup]`, docs/backup.md)".into(),
            ],
        };
    };
    HostService {
        name: "backup (restic-backups-appliance.service)".into(),
        host,
        runs_as: format!("root, outside every sandbox, on schedule `{}`", backup.schedule),
        privileges: vec![
            "reads every agent's state volume, every secret under /var/lib/appliance/secrets (the master key among them), Synapse's media and signing key".into(),
            "dumps Synapse's database as PostgreSQL's superuser, on the local socket".into(),
            "stages them in /var/lib/appliance/backup/staging (root-only), removed after every run".into(),
            format!(
                "sends them encrypted to `{}` with the password in `{}`; keeps {} daily, {} weekly, {} monthly snapshots",
                backup.repository, backup.password_file, backup.keep_daily, backup.keep_weekly, backup.keep_monthly
            ),
        ],
        why_outside: "it reads what every sandbox keeps and what no sandbox may see (the secrets)".into(),
        if_owned: vec![
            "read every secret and every agent's memory".into(),
            "with the repository's password: read every snapshot; with write access: delete them".into(),
        ],
    }
}
