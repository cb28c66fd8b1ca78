//! `appliance`: parse the command line, run it, report errors.

use std::process::ExitCode;

use agent_appliance::common::diag::SpecErrors;
use agent_appliance::common::term::{self, StdoutClosed};
use agent_appliance::generator::spec::SpecUnreadable;
use agent_appliance::operator::cli::{Cli, Command};
use agent_appliance::operator::commands::{self, generate::DriftFound};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Init(args) => commands::init::run(args),
        Command::Check(args) => commands::check::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Explain(args) => commands::explain::run(args),
        Command::Bootstrap(args) => commands::bootstrap::run(args),
        Command::Doctor(args) => commands::doctor::run(args),
        Command::Build(args) => commands::build::run(args),
        Command::Flash(args) => commands::flash::run(args),
        Command::Gce(args) => commands::gce::run(args),
        Command::Pair(args) => commands::pair::run(args),
        Command::PairServe(args) => commands::pair::serve(args),
        Command::Warden(args) => commands::warden::run(args),
        Command::Audit(command) => commands::audit::run(command),
        Command::Admin(command) => commands::admin::run(command),
        Command::Backup(command) => commands::backup::run(command),
        Command::Restore(args) => commands::backup::restore(args),
        Command::Upgrade(args) => commands::upgrade::run(args),
        Command::Completions(args) => commands::completions::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head -1`): nothing to say.
        Err(error) if error.chain().any(|e| e.is::<StdoutClosed>()) => ExitCode::SUCCESS,
        // A bad or unreadable spec: every problem, located, and exit code 2.
        Err(error)
            if error.is::<SpecErrors>()
                || error.is::<SpecUnreadable>()
                || error.is::<agent_appliance::generator::lint::LintsDenied>() =>
        {
            term::eprintln(&error.to_string());
            ExitCode::from(2)
        }
        Err(error) if error.is::<DriftFound>() || error.is::<agent_appliance::generator::output::Conflicts>() => {
            term::eprintln(&error.to_string());
            ExitCode::from(1)
        }
        Err(error) => {
            term::eprintln(&format!("error: {error:#}"));
            ExitCode::from(1)
        }
    }
}
