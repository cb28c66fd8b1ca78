//! `appliance bootstrap`: run on the Matrix host by systemd, once with
//! `--secrets-only` before Synapse starts and once after it.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::on_host::bootstrap::{self, Options};
use crate::operator::cli::BootstrapArgs;

pub fn run(args: &BootstrapArgs) -> Result<()> {
    let started = Instant::now();
    let plan = bootstrap::load_plan(&args.plan)?;
    let options = Options {
        homeserver: args.homeserver.clone(),
        state_dir: args.state_dir.clone(),
        secrets_only: args.secrets_only,
        timeout: Duration::from_secs(args.timeout),
    };
    bootstrap::run(&plan, &options, &mut |line| {
        // A closed log is no reason to stop halfway.
        let _ = crate::common::term::println(&line);
    })?;
    crate::common::term::println(&format!(
        "bootstrap of `{}` done in {:.2} s",
        plan.appliance,
        started.elapsed().as_secs_f64()
    ))
}
