//! `appliance admin password ADMIN`: a human admin's initial Matrix
//! password, derived from the bootstrap's master key exactly as bootstrap
//! derived it when it registered the account. It is stored nowhere: the
//! master key is the one secret, root-only.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::on_host::bootstrap::{MASTER_KEY_FILE, accounts, load_plan, secrets};
use crate::operator::cli::{AdminCommand, AdminPasswordArgs};
use crate::schema::plan::{AccountKind, Plan};

pub fn run(command: &AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Password(args) => password(args),
    }
}

fn password(args: &AdminPasswordArgs) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!(
            "`appliance admin password` reads the bootstrap's master key, which only root can read\nhint: run it as root on the Matrix host: `sudo appliance admin password {}`",
            args.admin
        );
    }
    let plan = load_plan(&args.plan)?;
    let user_id = admin_user_id(&plan, &args.admin)?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| PathBuf::from(&plan.state_dir));
    let key_path = state_dir
        .join(&plan.bootstrap_account.secrets_dir)
        .join(MASTER_KEY_FILE);
    let Some(master_key) = secrets::read(&key_path)? else {
        bail!(
            "there is no master key at `{}`, so no account was registered yet\nhint: `systemctl status appliance-bootstrap` on the Matrix host",
            key_path.display()
        );
    };
    crate::common::term::println(&accounts::password(&master_key, &user_id))?;
    crate::common::term::eprintln(&format!(
        "the initial password of {user_id}; log in and change it (docs/first-conversation.md). Once changed, this one no longer works."
    ));
    Ok(())
}

/// The user id of `name` (`gendo` or `@gendo:magi`) when it is one of the
/// plan's human admins.
pub(crate) fn admin_user_id(plan: &Plan, name: &str) -> Result<String> {
    let wanted = |user_id: &str, localpart: &str| name == user_id || name == localpart;
    if let Some(account) = plan.accounts.iter().find(|a| wanted(&a.user_id, &a.localpart)) {
        if account.kind == AccountKind::Admin {
            return Ok(account.user_id.clone());
        }
        bail!("`{name}` is an agent, not a human admin; agents log in with their token, never with a password");
    }
    let admins: Vec<&str> = plan
        .accounts
        .iter()
        .filter(|a| a.kind == AccountKind::Admin)
        .map(|a| a.localpart.as_str())
        .collect();
    bail!(
        "`{name}` is not an admin of appliance `{}`\nhint: admins are: {}",
        plan.appliance,
        if admins.is_empty() {
            "none (add them to `[matrix] admins`)".to_string()
        } else {
            admins.join(", ")
        }
    )
}
