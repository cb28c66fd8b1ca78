//! Admin commands as typed in a room: `!status`, `!halt [agent|all]
//! [--stop]`, `!resume [agent|all]`. Parsing only; who may run them is the warden's
//! business.

/// Which agents a command names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `all`, or nothing: every agent of the room the command was sent in.
    All,
    /// An agent's localpart (`casper`) or user id (`@casper:magi`), as typed.
    Agent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    /// Mute; with `stop`, also stop the agent's sandbox.
    Halt {
        target: Target,
        stop: bool,
    },
    Resume(Target),
}

/// `None` when `body` is not addressed to the warden (it does not start
/// with one of its words); `Some(Err(why))` when it is, but malformed.
pub fn parse(body: &str) -> Option<Result<Command, String>> {
    let mut words = body.split_whitespace();
    let verb = words.next()?;
    if !matches!(verb, "!status" | "!halt" | "!resume") {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    Some(build(verb, &rest))
}

fn build(verb: &str, args: &[&str]) -> Result<Command, String> {
    let stop = args.contains(&"--stop");
    let args: Vec<&str> = args.iter().copied().filter(|a| *a != "--stop").collect();
    if stop && verb != "!halt" {
        return Err(format!("`--stop` belongs to `!halt`; `{verb}` takes none"));
    }
    let target = match args.as_slice() {
        [] | ["all"] => Target::All,
        [agent] => Target::Agent((*agent).to_string()),
        _ => return Err(usage(verb)),
    };
    match verb {
        "!status" if args.is_empty() => Ok(Command::Status),
        "!status" => Err("`!status` takes no arguments".to_string()),
        "!halt" => Ok(Command::Halt { target, stop }),
        _ => Ok(Command::Resume(target)),
    }
}

fn usage(verb: &str) -> String {
    match verb {
        "!halt" => "usage: `!halt <agent|all> [--stop]`".to_string(),
        _ => format!("usage: `{verb} <agent|all>`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse("!status"), Some(Ok(Command::Status)));
        assert_eq!(
            parse("!halt casper"),
            Some(Ok(Command::Halt {
                target: Target::Agent("casper".into()),
                stop: false
            }))
        );
        assert_eq!(
            parse("!halt casper --stop"),
            Some(Ok(Command::Halt {
                target: Target::Agent("casper".into()),
                stop: true
            }))
        );
        assert_eq!(parse("  !resume   all "), Some(Ok(Command::Resume(Target::All))));
        assert_eq!(
            parse("!halt"),
            Some(Ok(Command::Halt {
                target: Target::All,
                stop: false
            }))
        );
        assert_eq!(
            parse("!resume @casper:magi"),
            Some(Ok(Command::Resume(Target::Agent("@casper:magi".into()))))
        );
    }

    #[test]
    fn other_text_is_not_a_command() {
        assert_eq!(parse("hello !halt casper"), None);
        assert_eq!(parse("!halting"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn malformed_commands_say_why() {
        assert!(parse("!halt a b").unwrap().unwrap_err().contains("usage"));
        assert!(parse("!status now").unwrap().is_err());
        assert!(parse("!resume casper --stop").unwrap().is_err());
        assert!(parse("!status --stop").unwrap().is_err());
    }
}
