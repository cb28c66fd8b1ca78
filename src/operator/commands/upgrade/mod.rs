//! `appliance upgrade`: the operator's side of `src/on_host/upgrade/`
//! (docs/upgrade.md): loads the plan and the backup config, picks the real
//! NixOS steps or `--system-program`, prints what happened; with
//! `--target-host`, builds and copies the system and runs the upgrade on
//! that host (`remote.rs`).

mod remote;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::common::term;
use crate::on_host::backup;
use crate::on_host::bootstrap::load_plan;
use crate::on_host::upgrade::system::{Nixos, Program, SYSTEM_PROFILE, System};
use crate::on_host::upgrade::{self, Outcome, Upgrade};
use crate::operator::cli::UpgradeArgs;
use crate::schema::plan::AccountKind;

pub fn run(args: &UpgradeArgs) -> Result<()> {
    if let Some(target) = &args.target_host {
        return remote::run(args, target);
    }
    let plan = load_plan(&args.plan)?;
    let config = backup::load(&args.restic.config.config)?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| PathBuf::from(&plan.state_dir));
    let probe_as = match &args.probe_as {
        Some(name) => super::admin::admin_user_id(&plan, name)?,
        None => plan
            .accounts
            .iter()
            .find(|a| a.kind == AccountKind::Admin)
            .map(|a| a.user_id.clone())
            .context("the plan has no admin to say the probe mentions\nhint: add one to `[matrix] admins`")?,
    };
    let up = Upgrade {
        plan: &plan,
        backup: &config,
        audit: args.audit.clone().unwrap_or_else(|| {
            state_dir
                .join(crate::on_host::warden::WARDEN_DIR)
                .join(crate::on_host::warden::AUDIT_FILE)
        }),
        state_dir,
        homeserver: args.homeserver.clone().unwrap_or_else(|| plan.homeserver.url.clone()),
        restic: args.restic.restic.clone(),
        docker: args.docker.clone(),
        register_volumes: !args.without_docker,
        probe_as,
        timeout: Duration::from_secs(args.timeout),
    };
    let system: Box<dyn System> = match &args.system_program {
        Some(program) => Box::new(Program {
            program: program.clone(),
        }),
        None => Box::new(Nixos {
            flake: args.flake.clone(),
            toplevel: args.system.clone(),
            profile: PathBuf::from(SYSTEM_PROFILE),
        }),
    };
    if args.dry_run {
        return term::print(&upgrade::preview(&up, system.as_ref())?);
    }
    match upgrade::run(&up, system.as_ref(), &mut |line| term::eprintln(line))? {
        Outcome::Upgraded { from, to, .. } => {
            term::println(&format!("upgraded: system generation {from} -> {to}"))?;
            Ok(())
        }
        Outcome::RolledBack {
            generation,
            snapshot,
            failed,
            ..
        } => bail!(
            "the upgrade failed and was rolled back (system generation {generation}, state snapshot `{snapshot}`): {}",
            failed.join("; ")
        ),
    }
}
