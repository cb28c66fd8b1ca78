//! Admin commands as typed in a room: `!status`, `!halt [agent|all]`,
//! `!resume [agent|all]`. Parsing only; who may run them is the warden's
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
    Halt(Target),
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
    if args.contains(&"--stop") {
        return Err("`--stop` (stopping the sandbox) is not built yet; the agent can only be muted".to_string());
    }
    match (verb, args) {
        ("!status", []) => Ok(Command::Status),
        ("!status", _) => Err("`!status` takes no arguments".to_string()),
        (_, [] | ["all"]) => Ok(wrap(verb, Target::All)),
        (_, [agent]) => Ok(wrap(verb, Target::Agent((*agent).to_string()))),
        _ => Err(format!("usage: `{verb} <agent|all>`")),
    }
}

fn wrap(verb: &str, target: Target) -> Command {
    if verb == "!halt" {
        Command::Halt(target)
    } else {
        Command::Resume(target)
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
            Some(Ok(Command::Halt(Target::Agent("casper".into()))))
        );
        assert_eq!(parse("  !resume   all "), Some(Ok(Command::Resume(Target::All))));
        assert_eq!(parse("!halt"), Some(Ok(Command::Halt(Target::All))));
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
        assert!(
            parse("!halt casper --stop")
                .unwrap()
                .unwrap_err()
                .contains("not built yet")
        );
    }
}
