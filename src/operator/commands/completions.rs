use anyhow::Result;
use clap::CommandFactory;

use crate::operator::cli::{Cli, CompletionsArgs};

pub fn run(args: &CompletionsArgs) -> Result<()> {
    // Into memory first: clap_complete panics when its writer fails, and a
    // closed pipe (`| head`) is no reason to.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "appliance", &mut script);
    crate::common::term::print(&String::from_utf8_lossy(&script))
}
