//! `appliance`: parse the command line, run it, report errors.

use std::process::ExitCode;

use agent_appliance::cli::{Cli, Command};
use agent_appliance::commands::{self, generate::DriftFound};
use agent_appliance::diag::SpecErrors;
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
        Command::Completions(args) => commands::completions::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A bad spec: every problem, located, and exit code 2.
        Err(error) if error.is::<SpecErrors>() || error.is::<agent_appliance::lint::LintsDenied>() => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
        Err(error) if error.is::<DriftFound>() || error.is::<agent_appliance::output::Conflicts>() => {
            eprintln!("{error}");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
