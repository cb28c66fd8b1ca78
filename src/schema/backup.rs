//! `backup.json`: what `appliance generate` writes for the Matrix host and
//! `appliance backup` / `appliance restore` read there (docs/backup.md).
//! Values only (paths, names, ids), never a secret: the repository's
//! password and credentials stay in host files this names.
//!
//! The plan's schema group (tests/layers.rs): the generator writes it, the
//! host reads it, and it imports nothing but serde.

use serde::{Deserialize, Serialize};

/// Bumped whenever a field changes meaning; the host refuses other versions.
pub const CONFIG_SCHEMA: u32 = 1;
/// Where modules/backup.nix installs the config.
pub const CONFIG_PATH: &str = "/etc/appliance/backup.json";
/// The job's name in `services.restic.backups`, and so its unit.
pub const JOB: &str = "appliance";
pub const UNIT: &str = "restic-backups-appliance.service";
/// The `paths` item of the warden's state and audit trail.
pub const WARDEN_ITEM: &str = "warden";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    pub schema: u32,
    pub appliance: String,
    pub repository: String,
    /// Host files; restic reads them (`RESTIC_PASSWORD_FILE`, the unit's
    /// `EnvironmentFile`).
    pub password_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_file: Option<String>,
    /// Root-only directory `prepare` fills and restic backs up (its one
    /// path); `restore` unpacks a snapshot into it too.
    pub staging_dir: String,
    /// The last run's result, written by `cleanup`, read by the warden.
    pub status_file: String,
    /// The restic job's unit, which `appliance backup now` starts.
    pub unit: String,
    /// Docker's `<data-root>/volumes`: volume `NAME` lives in
    /// `<volume_root>/NAME/_data` (Docker's local driver).
    pub volume_root: String,
    /// The agents' state volumes on this host.
    pub volumes: Vec<VolumeItem>,
    /// Synapse's database, when it is PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<Postgresql>,
    /// Files and directories copied as they are (SQLite databases in them
    /// through SQLite's backup API): Synapse's media and signing key, the
    /// appliance's secrets, the warden's audit trail.
    pub paths: Vec<PathItem>,
    /// Units that must be stopped while `restore` puts state back.
    pub units: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeItem {
    /// The Docker volume.
    pub name: String,
    /// The agent whose sandbox mounts it.
    pub agent: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathItem {
    /// A file-name-safe key: the staged copy's name.
    pub name: String,
    /// Absolute, on the host.
    pub path: String,
    /// What it is, for people.
    pub what: String,
}

/// PostgreSQL on the local socket with peer authentication: `pg_dump` and
/// `pg_restore` run as the server's superuser OS account (by uid and gid,
/// so no name lookup), which maps to the `superuser` role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Postgresql {
    pub database: String,
    /// The role owning the database (Synapse's), which a restore recreates
    /// it for.
    pub owner: String,
    pub socket_dir: String,
    pub superuser: String,
    pub uid: u32,
    pub gid: u32,
}
