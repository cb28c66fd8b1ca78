//! The steps of an upgrade that need NixOS, behind one trait: which system
//! generation runs, switching to the new one, switching back to a given
//! one, what a switch would change, and stopping and starting the units
//! that use the state a restore replaces. `Nixos` runs the real commands;
//! `Program` hands each step to a program (`--system-program`): a host
//! that is not NixOS, or the tests' stand-in, which swaps the image a
//! sandbox runs (tests/upgrade.rs).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Where NixOS keeps the system profile; `system-<N>-link` beside it is
/// generation N.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";

/// What `--dry-run` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// The closure difference (`nvd diff`, else `nix store diff-closures`).
    pub closure: String,
    /// What activating the new system would do (`dry-activate`): the
    /// units it would stop, restart and start.
    pub activation: String,
}

pub trait System {
    /// The running system's generation number.
    fn generation(&self) -> Result<u64>;
    /// Builds and switches to the new system (`nixos-rebuild switch`).
    fn switch(&self) -> Result<()>;
    /// Switches back to generation `generation`, whatever runs now.
    fn switch_to(&self, generation: u64) -> Result<()>;
    /// What a switch would change; changes nothing.
    fn preview(&self) -> Result<Preview>;
    /// `systemctl stop` / `systemctl start` of `units`.
    fn stop(&self, units: &[String]) -> Result<()>;
    fn start(&self, units: &[String]) -> Result<()>;
}

/// Runs `command`; its stdout, or an error with what it said.
fn output(mut command: Command, what: &str) -> Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The generation a profile link names: `system-42-link` is 42.
pub fn generation_of_link(target: &str) -> Option<u64> {
    let name = target.rsplit('/').next()?;
    name.strip_prefix("system-")?.strip_suffix("-link")?.parse().ok()
}

/// The real thing, on the NixOS host it runs on.
pub struct Nixos {
    /// `--flake` for `nixos-rebuild` (none: its default, /etc/nixos).
    pub flake: Option<String>,
    /// A system already built (and copied here, `nix copy`): switched to
    /// as `nixos-rebuild` does after its build, without building.
    pub toplevel: Option<PathBuf>,
    pub profile: PathBuf,
}

impl Nixos {
    /// The profile's system activated, as `nixos-rebuild switch` ends.
    fn activate(&self) -> Result<()> {
        let mut activate = Command::new(self.profile.join("bin/switch-to-configuration"));
        activate.arg("switch");
        output(activate, "`switch-to-configuration switch`").map(|_| ())
    }

    fn rebuild(&self, action: &str) -> Command {
        let mut command = Command::new("nixos-rebuild");
        command.arg(action);
        if let Some(flake) = &self.flake {
            command.args(["--flake", flake]);
        }
        command
    }
}

impl System for Nixos {
    fn generation(&self) -> Result<u64> {
        let target = std::fs::read_link(&self.profile)
            .with_context(|| format!("failed to read the system profile `{}`", self.profile.display()))?;
        generation_of_link(&target.to_string_lossy()).with_context(|| {
            format!(
                "`{}` points at `{}`, not a `system-<N>-link`",
                self.profile.display(),
                target.display()
            )
        })
    }

    fn switch(&self) -> Result<()> {
        let Some(toplevel) = &self.toplevel else {
            return output(self.rebuild("switch"), "`nixos-rebuild switch`").map(|_| ());
        };
        let mut set = Command::new("nix-env");
        set.arg("--profile").arg(&self.profile).arg("--set").arg(toplevel);
        output(set, "`nix-env --set`")?;
        self.activate()
    }

    /// The profile set to generation N, then activated: not `--rollback`,
    /// which is relative and would go one further back if run twice.
    fn switch_to(&self, generation: u64) -> Result<()> {
        let mut set = Command::new("nix-env");
        set.arg("--profile")
            .arg(&self.profile)
            .args(["--switch-generation", &generation.to_string()]);
        output(set, "`nix-env --switch-generation`")?;
        self.activate()
    }

    fn preview(&self) -> Result<Preview> {
        let dir = tempfile::tempdir()?;
        let new = match &self.toplevel {
            Some(toplevel) => toplevel.clone(),
            None => {
                let mut build = self.rebuild("build");
                build.current_dir(dir.path());
                output(build, "`nixos-rebuild build`")?;
                dir.path().join("result")
            }
        };
        let closure = match which("nvd") {
            Some(nvd) => {
                let mut diff = Command::new(nvd);
                diff.arg("diff").arg("/run/current-system").arg(&new);
                output(diff, "`nvd diff`")?
            }
            None => {
                let mut diff = Command::new("nix");
                diff.args(["store", "diff-closures", "/run/current-system"]).arg(&new);
                output(diff, "`nix store diff-closures`")?
            }
        };
        let mut dry = Command::new(new.join("bin/switch-to-configuration"));
        dry.arg("dry-activate");
        let activation = output(dry, "`switch-to-configuration dry-activate`")?;
        Ok(Preview { closure, activation })
    }

    fn stop(&self, units: &[String]) -> Result<()> {
        systemctl("stop", units)
    }

    fn start(&self, units: &[String]) -> Result<()> {
        systemctl("start", units)
    }
}

fn systemctl(verb: &str, units: &[String]) -> Result<()> {
    if units.is_empty() {
        return Ok(());
    }
    let mut command = Command::new("systemctl");
    command.arg(verb).args(units);
    output(command, &format!("`systemctl {verb}`")).map(|_| ())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Every step handed to `program`: `generation` (prints N), `switch`,
/// `switch-to N`, `diff` (prints the closure difference),
/// `dry-activate` (prints what activation would do), `stop UNIT...`,
/// `start UNIT...`.
pub struct Program {
    pub program: String,
}

impl Program {
    fn run(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new(&self.program);
        command.args(args);
        output(command, &format!("`{} {}`", self.program, args.join(" ")))
    }
}

impl System for Program {
    fn generation(&self) -> Result<u64> {
        let out = self.run(&["generation"])?;
        out.trim()
            .parse()
            .with_context(|| format!("`{} generation` printed `{}`, not a number", self.program, out.trim()))
    }

    fn switch(&self) -> Result<()> {
        self.run(&["switch"]).map(|_| ())
    }

    fn switch_to(&self, generation: u64) -> Result<()> {
        self.run(&["switch-to", &generation.to_string()]).map(|_| ())
    }

    fn preview(&self) -> Result<Preview> {
        Ok(Preview {
            closure: self.run(&["diff"])?,
            activation: self.run(&["dry-activate"])?,
        })
    }

    fn stop(&self, units: &[String]) -> Result<()> {
        let mut args = vec!["stop"];
        args.extend(units.iter().map(String::as_str));
        self.run(&args).map(|_| ())
    }

    fn start(&self, units: &[String]) -> Result<()> {
        let mut args = vec!["start"];
        args.extend(units.iter().map(String::as_str));
        self.run(&args).map(|_| ())
    }
}

/// The units `dry-activate` says it would stop, restart or start that are
/// a sandbox's (`docker-<sandbox>.service`), by sandbox.
pub fn restarted_sandboxes(activation: &str, sandboxes: &[String]) -> Vec<String> {
    let units: Vec<&str> = activation
        .lines()
        .filter_map(|line| line.split_once("the following units:").map(|(_, rest)| rest))
        .flat_map(|rest| rest.split(',').map(str::trim))
        .collect();
    sandboxes
        .iter()
        .filter(|s| units.contains(&format!("docker-{s}.service").as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_link_names_its_generation() {
        assert_eq!(generation_of_link("system-42-link"), Some(42));
        assert_eq!(generation_of_link("/nix/var/nix/profiles/system-7-link"), Some(7));
        assert_eq!(generation_of_link("/nix/store/abc-nixos-system"), None);
        assert_eq!(generation_of_link("system-x-link"), None);
    }

    #[test]
    fn dry_activate_names_the_sandboxes_that_restart() {
        // As switch-to-configuration prints it.
        let said = "would stop the following units: docker-melchior.service\n\
                    would restart the following units: docker-casper.service, nginx.service\n\
                    would start the following units: docker-casper-exec.service\n";
        let sandboxes = ["casper", "casper-exec", "melchior", "ollama"].map(String::from);
        assert_eq!(
            restarted_sandboxes(said, &sandboxes),
            ["casper", "casper-exec", "melchior"].map(String::from)
        );
    }
}
