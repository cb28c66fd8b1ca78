//! Admin commands as typed in a room: `!status`, `!halt [agent|all]
//! [--stop]`, `!resume [agent|all]`, and the egress grants' `!allow <agent>
//! <host> [duration]`, `!deny <agent> <host>`, `!grants`, and the code
//! execution approvals' `!approve <request> [duration]`, `!refuse
//! <request>`. Parsing only (and `!approve`'s duration, which has no
//! limit to check beyond the warden's cap); who may run them, and whether a
//! host or an `!allow` duration is acceptable, is the warden's business (so
//! a refusal is answered and audited with why).

use crate::common::grants::parse_duration;

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
    /// `!allow`: the agent, the host and the duration, as typed.
    Allow {
        agent: String,
        host: String,
        duration: Option<String>,
    },
    /// `!deny`: the agent and the host, as typed.
    Deny {
        agent: String,
        host: String,
    },
    /// `!grants`: the open grants.
    Grants,
    /// `!approve <id> [duration]` / `!refuse <id>`: a code execution
    /// request, as typed; with a duration (in seconds), a standing approval
    /// of its code sandbox's later requests for that long.
    Approve {
        id: String,
        standing: Option<u64>,
    },
    Refuse(String),
}

/// `None` when `body` is not addressed to the warden (it does not start
/// with one of its words); `Some(Err(why))` when it is, but malformed.
pub fn parse(body: &str) -> Option<Result<Command, String>> {
    let mut words = body.split_whitespace();
    let verb = words.next()?;
    if !matches!(
        verb,
        "!status" | "!halt" | "!resume" | "!allow" | "!deny" | "!grants" | "!approve" | "!refuse"
    ) {
        return None;
    }
    let rest: Vec<&str> = words.collect();
    Some(match verb {
        "!approve" => match rest.as_slice() {
            [id] => Ok(Command::Approve {
                id: (*id).to_string(),
                standing: None,
            }),
            [id, duration] => parse_duration(duration).map(|secs| Command::Approve {
                id: (*id).to_string(),
                standing: Some(secs),
            }),
            _ => Err("usage: `!approve <request> [duration]`, e.g. `!approve c3` or `!approve c3 15m`".to_string()),
        },
        "!refuse" => match rest.as_slice() {
            [id] => Ok(Command::Refuse((*id).to_string())),
            _ => Err("usage: `!refuse <request>`, e.g. `!refuse c3`".to_string()),
        },
        "!allow" | "!deny" | "!grants" => build_grant(verb, &rest),
        _ => build(verb, &rest),
    })
}

fn build_grant(verb: &str, args: &[&str]) -> Result<Command, String> {
    let owned = |s: &&str| (*s).to_string();
    match (verb, args) {
        ("!allow", [agent, host]) => Ok(Command::Allow {
            agent: owned(agent),
            host: owned(host),
            duration: None,
        }),
        ("!allow", [agent, host, duration]) => Ok(Command::Allow {
            agent: owned(agent),
            host: owned(host),
            duration: Some(owned(duration)),
        }),
        ("!allow", _) => {
            Err("usage: `!allow <agent> <host> [duration]`, e.g. `!allow balthasar pypi.org 2h`".to_string())
        }
        ("!deny", [agent, host]) => Ok(Command::Deny {
            agent: owned(agent),
            host: owned(host),
        }),
        ("!deny", _) => Err("usage: `!deny <agent> <host>`".to_string()),
        (_, []) => Ok(Command::Grants),
        _ => Err("`!grants` takes no arguments".to_string()),
    }
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
    fn grant_commands_parse_and_leave_judging_to_the_warden() {
        assert_eq!(
            parse("!allow balthasar pypi.org"),
            Some(Ok(Command::Allow {
                agent: "balthasar".into(),
                host: "pypi.org".into(),
                duration: None
            }))
        );
        assert_eq!(
            parse(" !allow @balthasar:magi 169.254.169.254 9w"),
            Some(Ok(Command::Allow {
                agent: "@balthasar:magi".into(),
                host: "169.254.169.254".into(),
                duration: Some("9w".into())
            }))
        );
        assert_eq!(
            parse("!deny balthasar pypi.org"),
            Some(Ok(Command::Deny {
                agent: "balthasar".into(),
                host: "pypi.org".into()
            }))
        );
        assert_eq!(parse("!grants"), Some(Ok(Command::Grants)));
        assert!(parse("!allow balthasar").unwrap().unwrap_err().contains("usage"));
        assert!(parse("!allow a b c d").unwrap().unwrap_err().contains("usage"));
        assert!(parse("!deny balthasar").unwrap().unwrap_err().contains("usage"));
        assert!(parse("!grants all").unwrap().is_err());
        assert_eq!(parse("!allowed x y"), None);
        assert_eq!(
            parse("!approve c3"),
            Some(Ok(Command::Approve {
                id: "c3".into(),
                standing: None
            }))
        );
        assert_eq!(
            parse("!approve c3 15m"),
            Some(Ok(Command::Approve {
                id: "c3".into(),
                standing: Some(900)
            }))
        );
        assert!(parse("!refuse c3 15m").unwrap().unwrap_err().contains("usage"));
        assert_eq!(parse(" !refuse  c3 "), Some(Ok(Command::Refuse("c3".into()))));
        assert!(parse("!approve").unwrap().unwrap_err().contains("usage"));
        assert!(parse("!approve c3 c4").unwrap().unwrap_err().contains("not a duration"));
        assert!(parse("!approve c3 15m 1h").unwrap().unwrap_err().contains("usage"));
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
