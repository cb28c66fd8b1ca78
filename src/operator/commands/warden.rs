//! `appliance warden`: run on the Matrix host by systemd, after Synapse and
//! bootstrap, as root and outside every sandbox.

use anyhow::Result;

use crate::on_host::bootstrap;
use crate::on_host::warden::{self, Options};
use crate::operator::cli::WardenArgs;

pub fn run(args: &WardenArgs) -> Result<()> {
    let plan = bootstrap::load_plan(&args.plan)?;
    let options = Options {
        homeserver: args.homeserver.clone(),
        state_dir: args.state_dir.clone(),
        audit: args.audit.clone(),
        once: args.once,
        head_every: std::time::Duration::from_secs(args.head_every),
        docker: args.docker.clone(),
        proxy_log: args.proxy_log.clone(),
        control: args.sandbox_control,
        unready_after: std::time::Duration::from_secs(args.unready_after),
        grants_dir: args.grants_dir.clone(),
        proxy_reload: args.proxy_reload.clone(),
        approval_timeout: std::time::Duration::from_secs(args.approval_timeout),
        approval_sockets: args.approval_sockets.clone(),
        code_sockets: args.code_sockets.clone(),
        backup_status: args.backup_status.clone(),
    };
    warden::run(&plan, &options, &mut |line| println!("{line}"))
}
