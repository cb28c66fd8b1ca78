//! `appliance upgrade --target-host USER@HOST` (docs/upgrade.md): the
//! operator's machine builds the host's system and copies it there; the
//! whole transaction (snapshot, switch, gate, rollback) then runs on the
//! host, where the state is, as `appliance upgrade --system STORE-PATH`
//! in a transient systemd unit, so a dropped SSH connection leaves it
//! running to its end instead of half done.
//!
//! Three commands, each stopping the upgrade when it fails:
//! `nix build --no-link --json FLAKE#nixosConfigurations.HOST.config.system.build.toplevel`,
//! `nix copy --to ssh://USER@HOST STORE-PATH`, and
//! `ssh -- USER@HOST systemd-run ... appliance upgrade --system STORE-PATH ...`.
//! What reaches the remote shell is validated (the target, the store path)
//! and every word of it quoted.

use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, anyhow, bail};

use crate::common::hostnames::is_dns_name;
use crate::common::shell::shell_word;
use crate::common::term;
use crate::operator::cli::UpgradeArgs;
use crate::operator::commands::build::{nix_command, output_paths, spawn_error};

/// The transient unit the remote upgrade runs as; a second upgrade while
/// one runs is refused by systemd (the unit exists).
pub const UNIT: &str = "appliance-upgrade";

/// `[USER@]HOST`, checked: what `ssh` and `nix copy --to ssh://` are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target(String);

impl Target {
    pub fn parse(text: &str) -> Result<Self> {
        let hint = "hint: write `root@HOST`: a user name and a host name or IPv4 address, as `ssh` takes them";
        let (user, host) = match text.split_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, text),
        };
        if let Some(user) = user {
            let first_ok = user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_');
            let rest_ok = user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if user.len() > 32 || !first_ok || !rest_ok {
                bail!("`--target-host {text}`: `{user}` is not a user name\n{hint}");
            }
        }
        if !is_dns_name(host) {
            bail!("`--target-host {text}`: `{host}` is not a host name or IPv4 address\n{hint}");
        }
        Ok(Target(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `FLAKE#HOST` split; `HOST` names `nixosConfigurations.HOST`.
pub fn flake_and_host(reference: &str) -> Result<(&str, &str)> {
    let hint = "hint: name the flake and the host as `nixos-rebuild` takes them: `--flake .#hub`";
    let Some((flake, host)) = reference.split_once('#') else {
        bail!("`--flake {reference}` names no host, and `--target-host` builds one host's system\n{hint}");
    };
    if flake.is_empty() || flake.starts_with('-') {
        bail!("`--flake {reference}`: `{flake}` is not a flake reference\n{hint}");
    }
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        bail!("`--flake {reference}`: `{host}` is not a host of the spec\n{hint}");
    }
    Ok((flake, host))
}

/// Whether `path` is a store path, `/nix/store/<hash>-<name>`, as Nix
/// spells them: the only thing `nix build` may hand to the remote command.
pub fn is_store_path(path: &str) -> bool {
    let Some(base) = path.strip_prefix("/nix/store/") else {
        return false;
    };
    let Some((hash, name)) = base.split_once('-') else {
        return false;
    };
    let nix32 = |c: char| c.is_ascii_digit() || (c.is_ascii_lowercase() && !matches!(c, 'e' | 'o' | 'u' | 't'));
    hash.len() == 32
        && hash.chars().all(nix32)
        && !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "+-._?=".contains(c))
}

/// The command the target's shell runs: `appliance upgrade --system PATH`
/// with the gate's options, in a transient unit whose output comes back
/// over this connection (`--pipe`) and whose exit status is `ssh`'s
/// (`--wait`). `--setenv=PATH` hands the unit the login shell's PATH
/// (`/run/current-system/sw/bin`: `appliance`, `restic`, `docker`,
/// `nix-env`).
pub fn remote_command(system: &str, args: &UpgradeArgs) -> String {
    let mut words: Vec<String> = [
        "systemd-run",
        "--quiet",
        "--collect",
        "--wait",
        "--pipe",
        &format!("--unit={UNIT}"),
        "--setenv=PATH",
        "--",
        "appliance",
        "upgrade",
        "--system",
        system,
        "--timeout",
        &args.timeout.to_string(),
    ]
    .map(String::from)
    .to_vec();
    if let Some(admin) = &args.probe_as {
        words.extend(["--probe-as".to_string(), admin.clone()]);
    }
    if args.dry_run {
        words.push("--dry-run".to_string());
    }
    words.iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" ")
}

fn failed(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

pub fn run(args: &UpgradeArgs, target: &str) -> Result<()> {
    let target = Target::parse(target)?;
    let reference = args
        .flake
        .as_deref()
        .context("`--target-host` needs `--flake FLAKE#HOST`: the system to build here")?;
    let (flake, host) = flake_and_host(reference)?;
    let attribute = format!("{flake}#nixosConfigurations.{host}.config.system.build.toplevel");

    term::eprintln(&format!("building {host}'s system here: {attribute}"));
    let built = nix_command()
        .args(["build", "--no-link", "--json", &attribute])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(spawn_error)?;
    if !built.status.success() {
        bail!(
            "building {host}'s system failed ({}; Nix's error is above); nothing was copied to or changed on `{}`",
            failed(built.status),
            target.as_str()
        );
    }
    let printed = String::from_utf8_lossy(&built.stdout);
    let system = match output_paths(&printed)?.as_slice() {
        [path] if is_store_path(path) => path.clone(),
        _ => bail!(
            "`nix build` printed `{}`, not one store path; nothing was copied to or changed on `{}`",
            printed.trim_end(),
            target.as_str()
        ),
    };

    term::eprintln(&format!("copying {system} to {}", target.as_str()));
    let copied = nix_command()
        .args(["copy", "--to", &format!("ssh://{}", target.as_str()), &system])
        .stdin(Stdio::null())
        .status()
        .map_err(spawn_error)?;
    if !copied.success() {
        bail!(
            "copying the system to `{}` failed ({}; Nix's error is above); nothing was changed there",
            target.as_str(),
            failed(copied)
        );
    }

    let command = remote_command(&system, args);
    term::eprintln(&format!("upgrading on {}: {command}", target.as_str()));
    let upgraded = Command::new("ssh")
        .args(["--", target.as_str(), &command])
        .stdin(Stdio::null())
        .status()
        .map_err(|error| anyhow!("failed to run `ssh`: {error}"))?;
    match upgraded.code() {
        Some(0) => Ok(()),
        Some(255) => bail!(
            "`ssh {}` failed or the connection dropped (exit status 255); an upgrade that started goes on there \
             to its end, in unit `{UNIT}`\nhint: `ssh {} journalctl -u {UNIT}` shows it; rerun this command once it is over",
            target.as_str(),
            target.as_str()
        ),
        _ => bail!(
            "the upgrade on `{}` failed ({}); what failed and what was rolled back is above",
            target.as_str(),
            failed(upgraded)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_a_user_and_a_host() {
        for good in ["root@hub", "hub", "root@10.0.0.7", "deploy_1@hub.example.org"] {
            assert_eq!(Target::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "-oProxyCommand=x",
            "root@-oProxyCommand=x",
            "root@hub;reboot",
            "root@hub host",
            "root@",
            "@hub",
            "Root@hub",
            "root@hub:22",
            "root@[::1]",
            "root@hub/x",
            "",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn the_flake_names_the_host() {
        assert_eq!(flake_and_host(".#hub").unwrap(), (".", "hub"));
        assert_eq!(flake_and_host("github:o/r#hub-2").unwrap(), ("github:o/r", "hub-2"));
        for bad in [".", "#hub", ".#", "-x#hub", ".#hub.config", ".#a b"] {
            assert!(flake_and_host(bad).is_err(), "{bad} was taken");
        }
    }

    #[test]
    fn only_store_paths_reach_the_remote_command() {
        assert!(is_store_path(
            "/nix/store/0c5pw6pr4yb8v7rq3xqwkw8g1m6fgbq9-nixos-system-hub-25.11"
        ));
        for bad in [
            "/nix/store/0c5pw6pr4yb8v7rq3xqwkw8g1m6fgbq9-a b",
            "/nix/store/0c5pw6pr4yb8v7rq3xqwkw8g1m6fgbq9-x;reboot",
            "/nix/store/0c5pw6pr4yb8v7rq3xqwkw8g1m6fgbq9-$(id)",
            "/nix/store/short-name",
            "/nix/store/0c5pw6pr4yb8v7rq3xqwkw8g1m6fgbqe-name",
            "/tmp/0c5pw6pr4yb8v7rq3xqwkw8g1m6fgbq9-name",
            "/nix/store/0c5pw6pr4yb8v7rq3xqwkw8g1m6fgbq9-",
        ] {
            assert!(!is_store_path(bad), "{bad} was taken");
        }
    }

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(shell_word("--timeout"), "--timeout");
        assert_eq!(shell_word("@gendo:magi"), "@gendo:magi");
        assert_eq!(shell_word("it's $(x)"), r"'it'\''s $(x)'");
        assert_eq!(shell_word(""), "''");
    }
}
