//! `[backup]` on the Matrix host: `backup.json` (values the host's
//! `appliance backup` reads: what is backed up and where it lives) and the
//! values of `appliance.backup` in the host's module (modules/backup.nix
//! maps them onto nixpkgs' `services.restic.backups`).
//! docs/backup.md says what is backed up and why restic.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde_json::Value;

use super::values::{GeneratedFile, Setting, value};
use super::{Tree, json};
use crate::generator::model::{Appliance, Backup, Host, STATE_DIR};
use crate::generator::spec::schema::SynapseDatabase;
use crate::schema::backup::{BackupConfig, CONFIG_SCHEMA, PathItem, Postgresql, UNIT, VolumeItem};

/// The file beside the host's `options.json`.
pub const CONFIG_FILE: &str = "backup.json";

/// nixpkgs' Synapse keeps its state here (`services.matrix-synapse.dataDir`);
/// its `media_store_path` and `signing_key_path` default to the names below
/// it, which the generated settings leave alone.
const SYNAPSE_DATA_DIR: &str = "/var/lib/matrix-synapse";
/// Docker's default `data-root` on NixOS, where the local volume driver
/// keeps `volumes/<name>/_data`.
const DOCKER_VOLUMES: &str = "/var/lib/docker/volumes";
/// NixOS's PostgreSQL runs as `postgres` (`ids.uids.postgres` and
/// `ids.gids.postgres` in nixos/modules/misc/ids.nix: 71), socket in
/// `/run/postgresql`, peer authentication for that account.
const POSTGRES_ID: u32 = 71;
const POSTGRES_SOCKET_DIR: &str = "/run/postgresql";

/// Writes `backup.json` on the Matrix host when the spec has `[backup]`;
/// the host and its `appliance.backup` values.
pub fn render(appliance: &Appliance, tree: &mut Tree) -> Result<Option<(String, Setting)>> {
    let (Some(backup), Some(host)) = (&appliance.backup, appliance.hosts.get(&appliance.matrix.host)) else {
        return Ok(None);
    };
    let config = config(appliance, host, backup);
    tree.insert(format!("hosts/{}/{CONFIG_FILE}", host.name), json(&config)?);
    let setting = Setting::new("appliance.backup", module_values(host, backup, &config)).with_notes(vec![
        "Backups (modules/backup.nix, docs/backup.md): restic, on the spec's schedule, into the spec's".into(),
        "repository, of what backup.json lists. The repository's password and credentials are files".into(),
        "on this host, named here, never in the Nix store.".into(),
    ]);
    Ok(Some((host.name.clone(), setting)))
}

/// The values of `appliance.backup` (modules/backup.nix).
fn module_values(host: &Host, backup: &Backup, config: &BackupConfig) -> BTreeMap<&'static str, Value> {
    BTreeMap::from([
        ("enable", Value::from(true)),
        (
            "configFile",
            value(GeneratedFile::new(format!("hosts/{}/{CONFIG_FILE}", host.name))),
        ),
        ("repository", Value::from(backup.repository.clone())),
        ("passwordFile", Value::from(backup.password_file.clone())),
        ("environmentFile", Value::from(backup.environment_file.clone())),
        ("stagingDir", Value::from(config.staging_dir.clone())),
        ("schedule", Value::from(backup.schedule.clone())),
        ("keepDaily", Value::from(backup.keep_daily)),
        ("keepWeekly", Value::from(backup.keep_weekly)),
        ("keepMonthly", Value::from(backup.keep_monthly)),
    ])
}

/// What the Matrix host backs up: its agents' state volumes, Synapse's
/// database, media and signing key, the appliance's secrets (the master
/// key among them) and the warden's audit trail.
pub fn config(appliance: &Appliance, host: &Host, backup: &Backup) -> BackupConfig {
    let agent_sandboxes: Vec<_> = host.sandboxes.iter().filter(|s| !s.is_service()).collect();
    let volumes: BTreeSet<(String, String)> = agent_sandboxes
        .iter()
        .flat_map(|s| {
            s.volumes
                .iter()
                .map(|v| (v.name.clone(), s.agent.clone().unwrap_or_default()))
        })
        .collect();
    let mut paths = vec![
        path_item(
            "synapse-media",
            "media_store",
            "Synapse's media store (uploads, avatars)",
        ),
        path_item(
            "synapse-signing-key",
            "homeserver.signing.key",
            "Synapse's signing key (the server's identity)",
        ),
        PathItem {
            name: "appliance-secrets".into(),
            path: format!("{STATE_DIR}/secrets"),
            what: "the appliance's secrets: the master key, tokens, Synapse's and the agents' secrets".into(),
        },
        PathItem {
            name: crate::schema::backup::WARDEN_ITEM.into(),
            path: format!("{STATE_DIR}/warden"),
            what: "the warden's state and audit trail".into(),
        },
    ];
    if appliance.matrix.database == SynapseDatabase::Sqlite {
        paths.insert(
            0,
            path_item("synapse-sqlite", "homeserver.db", "Synapse's SQLite database"),
        );
    }
    let mut units = vec![
        "matrix-synapse.service".to_string(),
        "appliance-warden.service".to_string(),
    ];
    units.extend(agent_sandboxes.iter().map(|s| format!("docker-{}.service", s.name)));
    BackupConfig {
        schema: CONFIG_SCHEMA,
        appliance: appliance.name.clone(),
        repository: backup.repository.clone(),
        password_file: backup.password_file.clone(),
        environment_file: backup.environment_file.clone(),
        staging_dir: format!("{STATE_DIR}/backup/staging"),
        status_file: format!("{STATE_DIR}/backup/status.json"),
        unit: UNIT.to_string(),
        volume_root: DOCKER_VOLUMES.to_string(),
        volumes: volumes
            .into_iter()
            .map(|(name, agent)| VolumeItem { name, agent })
            .collect(),
        postgresql: (appliance.matrix.database == SynapseDatabase::Postgresql).then(|| Postgresql {
            database: super::synapse::POSTGRES_NAME.to_string(),
            owner: super::synapse::POSTGRES_NAME.to_string(),
            socket_dir: POSTGRES_SOCKET_DIR.to_string(),
            superuser: "postgres".to_string(),
            uid: POSTGRES_ID,
            gid: POSTGRES_ID,
        }),
        paths,
        units,
    }
}

fn path_item(name: &str, file: &str, what: &str) -> PathItem {
    PathItem {
        name: name.to_string(),
        path: format!("{SYNAPSE_DATA_DIR}/{file}"),
        what: what.to_string(),
    }
}
