//! `appliance build`: the flake output of a target, built by `nix build`
//! with progress read from Nix's internal-json log ([`crate::operator::nixlog`]).

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::generator::model::Appliance;
use crate::generator::spec::schema::{System, Target};
use crate::operator::cli::BuildArgs;
use crate::operator::nixlog::{self, Event, Progress, human_bytes, parse_line, store_name};

use super::generate;

/// What `appliance build TARGET` asks Nix for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlakeOutput {
    pub host: String,
    /// The attribute path in the flake, e.g. `packages.x86_64-linux.gce-image`.
    pub attribute: String,
}

/// Maps a target to the flake output that builds it. This is the one place
/// that knows the flake's output names (nix/hosts.nix): GCE images under
/// `packages.x86_64-linux` (`gce-image`, or `gce-image-<host>`), Pi images
/// under `packages.aarch64-linux` (`rpi4`, or `rpi4-<host>`; with `cross`,
/// the x86_64-built `packages.x86_64-linux.rpi4-cross[-<host>]`), and an
/// existing NixOS host's system under `nixosConfigurations`.
pub fn flake_output(appliance: &Appliance, target: &str, cross: bool) -> Result<FlakeOutput> {
    let only = |kind: Target, what: &str| -> Result<String> {
        let hosts: Vec<&String> = appliance
            .hosts
            .values()
            .filter(|h| h.target == kind)
            .map(|h| &h.name)
            .collect();
        match hosts.as_slice() {
            [one] => Ok((*one).clone()),
            [] => bail!("the spec has no {what} host, so there is no `{target}` to build"),
            many => bail!(
                "the spec has {} {what} hosts, so `{target}` is ambiguous\nhint: name one: {}",
                many.len(),
                many.iter()
                    .map(|h| format!("`appliance build {h}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    };
    let (host, attribute) = match target {
        "gce-image" => (only(Target::Gce, "GCE")?, "packages.x86_64-linux.gce-image".to_string()),
        "rpi4" => (
            only(Target::Rpi4, "Raspberry Pi 4")?,
            "packages.aarch64-linux.rpi4".to_string(),
        ),
        name => {
            let host = appliance.hosts.get(name).ok_or_else(|| {
                anyhow!(
                    "no host `{name}` in the spec, and `{name}` is not `gce-image` or `rpi4`\nhint: hosts are: {}",
                    super::host_names(appliance)
                )
            })?;
            let attribute = match host.target {
                Target::Gce => format!("packages.x86_64-linux.gce-image-{name}"),
                Target::Rpi4 => format!("packages.aarch64-linux.rpi4-{name}"),
                Target::Nixos => format!("nixosConfigurations.{name}.config.system.build.toplevel"),
            };
            (name.to_string(), attribute)
        }
    };
    if !cross {
        return Ok(FlakeOutput { host, attribute });
    }
    if appliance.hosts[&host].target != Target::Rpi4 {
        bail!("--cross is for Raspberry Pi images; `{host}` is not a Pi");
    }
    let attribute = attribute.replacen("packages.aarch64-linux.rpi4", "packages.x86_64-linux.rpi4-cross", 1);
    Ok(FlakeOutput { host, attribute })
}

/// Nix's name for the system this binary runs on.
pub fn this_system() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "aarch64-linux",
        _ => "x86_64-linux",
    }
}

fn system_name(system: System) -> &'static str {
    match system {
        System::X86_64Linux => "x86_64-linux",
        System::Aarch64Linux => "aarch64-linux",
    }
}

/// A hint for a failed build, from Nix's error messages and the failing
/// build's last log lines. Matches the texts Nix and QEMU really print
/// (recorded in tests/fixtures/nix-log/).
pub fn hint(errors: &[String], log_tail: &[String]) -> Option<String> {
    let all = || errors.iter().chain(log_tail);
    if let Some((system, features)) = errors.iter().find_map(|e| required_system(e)) {
        if system != this_system() && system == "aarch64-linux" {
            return Some(NO_AARCH64_BUILDER.to_string());
        }
        if features.iter().any(|f| f == "kvm") {
            return Some(NO_KVM.to_string());
        }
        return Some(format!(
            "this machine cannot build for `{system}` with features {{{}}}; pass a builder that can: `-- --builders 'ssh://HOST {system}'`",
            features.join(", ")
        ));
    }
    if all().any(|l| l.contains("Could not access KVM kernel module") || l.contains("failed to initialize kvm")) {
        return Some(NO_KVM.to_string());
    }
    if let Some(message) = errors.iter().find(|e| e.contains("has an unfree license")) {
        return Some(unfree_hint(message));
    }
    None
}

const NO_AARCH64_BUILDER: &str = "the Pi's SD image is an aarch64-linux derivation and this Nix has no aarch64-linux builder. Either \
     emulate it (NixOS: `boot.binfmt.emulatedSystems = [ \"aarch64-linux\" ];`, then rebuild; other systems: register \
     qemu-user binfmt and add `extra-platforms = aarch64-linux` to nix.conf), use an aarch64 machine as a remote \
     builder: `appliance build rpi4 -- --builders 'ssh://USER@HOST aarch64-linux'`, or cross-compile: `appliance build \
     rpi4 --cross` (the flake's `rpi4-cross`: everything is built, nothing comes from the binary cache)";

const NO_KVM: &str = "the GCE image is assembled inside a QEMU VM (nixpkgs' make-disk-image requires the `kvm` system \
     feature), and this Nix has no usable KVM. Make /dev/kvm exist and be accessible to the builders (`modprobe kvm_intel` \
     or `kvm_amd`; on a cloud VM, enable nested virtualization); Nix then adds `kvm` to `system-features` by itself. Or \
     build on a machine with KVM: `-- --builders 'ssh://USER@HOST x86_64-linux - 1 1 kvm'`";

fn unfree_hint(message: &str) -> String {
    let package = message
        .split_once("Package ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .map(|p| p.trim_matches(|c: char| "‘’'\"".contains(c)).to_string())
        .unwrap_or_else(|| "a package".to_string());
    format!(
        "{package} is unfree and the host's configuration does not allow it. The flake allows unfree packages only \
         for NVIDIA GPUs (the driver and the CUDA libraries Ollama links): on a host with an NVIDIA `gpu` in the spec, \
         through the host's `nixpkgs.config` (nix/unfree.nix, which the flake's own configurations set). Declare \
         the host's GPU and run `appliance generate`, or allow the package yourself \
         (`nixpkgs.config.allowUnfreePredicate`)"
    )
}

/// The system and features of Nix's "cannot build here" error: older Nix
/// (2.8 here) says `a 'S' with features {F} is required to build '...'`, newer ones
/// `Required system: 'S' with features {F}`.
pub fn required_system(message: &str) -> Option<(String, Vec<String>)> {
    let rest = if let Some(i) = message.find("Required system: '") {
        &message[i + "Required system: '".len()..]
    } else {
        let end = message.find(" is required to build")?;
        let start = message[..end].find("a '")? + 3;
        &message[start..end]
    };
    let system = rest[..rest.find('\'')?].to_string();
    let features = rest
        .find('{')
        .zip(rest.find('}'))
        .map(|(a, b)| {
            rest[a + 1..b]
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some((system, features))
}

pub fn run(args: &BuildArgs) -> Result<()> {
    let appliance = super::load(&args.spec.spec)?;
    let output = flake_output(&appliance, &args.target, args.cross)?;
    ensure_generated_is_current(&appliance, &args.spec.spec)?;
    let flake_dir = flake_dir(&args.spec.spec)?;
    ensure_nix_is_new_enough(&flake_dir)?;
    let reference = format!("{}#{}", flake_dir.display(), output.attribute);
    let host = &appliance.hosts[&output.host];
    crate::common::term::eprintln(&format!(
        "building {} ({}, {}): {reference}",
        output.host,
        serde_json::to_value(host.target)?.as_str().unwrap_or_default(),
        system_name(host.system)
    ));
    if args.dry_run {
        return dry_run(&reference, &args.nix_args);
    }
    let out_link = args
        .out_link
        .clone()
        .unwrap_or_else(|| flake_dir.join(format!("result-{}", output.host)));
    let outputs = build(&reference, &out_link, args)?;
    report_result(&outputs, &out_link, host.target, &output.host)
}

/// Refuses to build from a generated tree the spec would not write: the
/// image would not be what the spec says.
fn ensure_generated_is_current(appliance: &Appliance, spec: &Path) -> Result<()> {
    let out = generate::output_dir(spec, None);
    let (drift, _) = generate::drift(appliance, &out)?;
    if drift.is_clean() {
        return Ok(());
    }
    bail!(
        "`{}` is not what `{}` generates ({} differing, {} missing, {} extra files)\nhint: run `appliance generate` (and `git add` it: the flake sees only files git tracks), then build again",
        out.display(),
        spec.display(),
        drift.differing.len(),
        drift.missing.len(),
        drift.extra.len()
    )
}

/// The flake is the directory of the spec.
fn flake_dir(spec: &Path) -> Result<PathBuf> {
    let dir = spec
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir
        .canonicalize()
        .with_context(|| format!("failed to find the spec's directory `{}`", dir.display()))?;
    if !dir.join("flake.nix").is_file() {
        bail!(
            "no `flake.nix` beside the spec in `{}`\nhint: build from a checkout of agent-appliance, whose flake builds the generated hosts",
            dir.display()
        );
    }
    Ok(dir)
}

/// The oldest Nix that the flake's pinned nixpkgs (26.05) evaluates with;
/// older ones stop at nixpkgs' own version check, after fetching it.
pub const MIN_NIX: (u32, u32) = (2, 18);

/// The version in `nix --version`: `nix (Nix) 2.8.0`, and the forks'
/// `nix (Lix, like Nix) 2.91.1` or `nix (Determinate Nix 3.8.2) 2.30.1`:
/// the last word that is a version.
pub fn nix_version(text: &str) -> Option<(u32, u32, u32)> {
    // Pre-releases read as their release: `2.18pre20230101_abc` is 2.18.0.
    let number = |part: &str| -> Option<u32> {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    text.split_whitespace().rev().find_map(|word| {
        let mut parts = word.split('.');
        let major = parts.next().and_then(number)?;
        let minor = parts.next().and_then(number)?;
        let patch = parts.next().and_then(number).unwrap_or(0);
        Some((major, minor, patch))
    })
}

/// Whether the flake's lock pins nixpkgs, so the build needs [`MIN_NIX`].
/// A flake without nixpkgs (the tests' stand-ins) works on older Nix.
fn pins_nixpkgs(flake_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(flake_dir.join("flake.lock")) else {
        return false;
    };
    let Ok(lock) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    let root = lock["root"].as_str().unwrap_or("root");
    lock["nodes"][root]["inputs"].get("nixpkgs").is_some()
}

/// Stops before `nix build` (and before `--dry-run` fetches anything) when
/// this Nix is older than the flake's nixpkgs accepts. `nix --version`
/// reads no flake and reaches no network.
fn ensure_nix_is_new_enough(flake_dir: &Path) -> Result<()> {
    if !pins_nixpkgs(flake_dir) {
        return Ok(());
    }
    let output = Command::new("nix")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(spawn_error)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let Some((major, minor, patch)) = nix_version(&text) else {
        crate::common::term::eprintln(&format!(
            "warning: cannot tell Nix's version from `nix --version` ({}); the flake needs {}.{} or later",
            text.trim(),
            MIN_NIX.0,
            MIN_NIX.1
        ));
        return Ok(());
    };
    if (major, minor) < MIN_NIX {
        bail!(
            "Nix {major}.{minor}.{patch} is too old for this flake: its pinned nixpkgs needs Nix {}.{} or later\n\
             hint: install a newer Nix (https://nixos.org/download; Debian's `nix-bin` is older), or build on a machine that has one",
            MIN_NIX.0,
            MIN_NIX.1
        );
    }
    Ok(())
}

/// `nix` with the features a flake build needs on every Nix since 2.4.
pub(crate) fn nix_command() -> Command {
    let mut command = Command::new("nix");
    command.args(["--extra-experimental-features", "nix-command flakes"]);
    command
}

pub(crate) fn spawn_error(error: std::io::Error) -> anyhow::Error {
    anyhow!("failed to run `nix`: {error}\nhint: install Nix (https://nixos.org/download) or run inside `nix develop`")
}

fn dry_run(reference: &str, nix_args: &[String]) -> Result<()> {
    let output = nix_command()
        .args(["build", "--dry-run", "--log-format", "internal-json", reference])
        .args(nix_args)
        .stdin(Stdio::null())
        .output()
        .map_err(spawn_error)?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let progress = Progress::from_log(&log);
        return Err(failure(&progress, output.status.code()));
    }
    let dry = nixlog::parse_dry_run(&log);
    let mut text = format!(
        "{} to build, {} to fetch{}\n",
        super::count(dry.builds.len(), "derivation", "derivations"),
        super::count(dry.fetches.len(), "path", "paths"),
        dry.fetch_sizes.as_ref().map(|s| format!(" {s}")).unwrap_or_default()
    );
    for drv in &dry.builds {
        text.push_str(&format!("  build  {}\n", store_name(drv)));
    }
    for path in &dry.fetches {
        text.push_str(&format!("  fetch  {}\n", store_name(path)));
    }
    crate::common::term::print(&text)
}

/// Runs the build, showing progress; returns the output paths.
fn build(reference: &str, out_link: &Path, args: &BuildArgs) -> Result<Vec<String>> {
    let mut child = nix_command()
        .args(["build", "--log-format", "internal-json", "--json", "--out-link"])
        .arg(out_link)
        .arg(reference)
        .args(&args.nix_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut stdout = child.stdout.take().expect("piped");
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let stderr = child.stderr.take().expect("piped");
    let mut display = Display::new(args.print_build_logs);
    let mut progress = Progress::default();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("failed to read nix's log")?;
        let event = progress.apply(&parse_line(&line));
        display.show(&progress, event);
    }
    display.finish();
    let status = child.wait().context("failed to wait for nix")?;
    let stdout = stdout_reader
        .join()
        .map_err(|_| anyhow!("the thread reading nix's output panicked"))?
        .context("failed to read nix's output")?;
    if !status.success() {
        return Err(failure(&progress, status.code()));
    }
    output_paths(&stdout)
}

/// The error for a failed `nix build`: Nix's errors, the failing build's
/// last log lines, and a hint when the cause is known.
fn failure(progress: &Progress, code: Option<i32>) -> anyhow::Error {
    let mut text = format!(
        "nix build failed ({})",
        code.map_or("killed by a signal".to_string(), |c| format!("exit code {c}"))
    );
    for error in &progress.errors {
        text.push_str("\n  ");
        text.push_str(&error.replace('\n', "\n  "));
    }
    for line in progress.plain.iter().filter(|l| !l.trim().is_empty()) {
        text.push_str("\n  ");
        text.push_str(line);
    }
    // Nix 2.20 and later put the last log lines into the error already.
    let nix_showed_log = progress.errors.iter().any(|e| e.contains("log lines:"));
    let mut tail = Vec::new();
    for drv in progress.failed_derivations() {
        tail = progress.log_tail(&drv);
        if !tail.is_empty() && !nix_showed_log {
            text.push_str(&format!("\nlast {} log lines of {}:", tail.len(), store_name(&drv)));
            for line in &tail {
                text.push_str("\n  | ");
                text.push_str(line);
            }
            text.push_str(&format!("\nfull log: nix log {drv}"));
        }
    }
    if let Some(hint) = hint(&progress.errors, &tail) {
        text.push_str("\nhint: ");
        text.push_str(&hint);
    }
    anyhow!(text)
}

/// The output paths of `nix build --json`: `[{"drvPath":..,"outputs":{"out":..}}]`.
pub fn output_paths(json: &str) -> Result<Vec<String>> {
    let value: Value =
        serde_json::from_str(json).with_context(|| format!("nix build printed no JSON result: `{json}`"))?;
    let paths: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|built| built.get("outputs").and_then(Value::as_object))
        .flat_map(|outputs| outputs.values().filter_map(Value::as_str).map(str::to_string))
        .collect();
    if paths.is_empty() {
        bail!("nix build reported no output paths: `{json}`");
    }
    Ok(paths)
}

fn report_result(outputs: &[String], out_link: &Path, target: Target, host: &str) -> Result<()> {
    let mut lines = Vec::new();
    for path in outputs {
        let size = tree_size(Path::new(path))
            .map(human_bytes)
            .unwrap_or_else(|| "size unknown: not in this machine's /nix/store".to_string());
        lines.push(format!("built {path} ({size})"));
    }
    lines.push(format!("result: {}", out_link.display()));
    if let Some(image) = image_file(out_link) {
        lines.push(format!("image: {}", image.display()));
        match target {
            Target::Rpi4 => lines.push(format!(
                "next: appliance flash --image {} --device /dev/<your SD card>",
                image.display()
            )),
            Target::Gce => lines.push("next: appliance gce --project P --zone Z --bucket B".to_string()),
            Target::Nixos => {}
        }
    }
    if target == Target::Nixos {
        lines.push(format!(
            "next: nixos-rebuild switch --flake .#{host} --target-host root@<{host}'s address>"
        ));
    }
    crate::common::term::println(&lines.join("\n"))
}

/// Total size of the files under a path, symlinks not followed.
pub fn tree_size(path: &Path) -> Option<u64> {
    if !path.exists() {
        return None;
    }
    Some(
        walkdir::WalkDir::new(path)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum(),
    )
}

/// The disk image inside a build result: nixpkgs puts the Pi's under
/// `sd-image/*.img.zst` and the GCE one at the top as `*.raw.tar.gz`.
pub fn image_file(result: &Path) -> Option<PathBuf> {
    let mut found = files_ending_in(result, &[".img.zst", ".img", ".raw.tar.gz"]);
    (found.len() == 1).then(|| found.remove(0))
}

/// The files (links followed) at most three levels under a build result
/// whose names end in one of `endings`, sorted.
pub fn files_ending_in(result: &Path, endings: &[&str]) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = walkdir::WalkDir::new(result)
        .follow_links(true)
        .max_depth(3)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| {
            let name = p.to_string_lossy();
            endings.iter().any(|ending| name.ends_with(ending))
        })
        .collect();
    found.sort();
    found
}

/// The progress bar on a terminal, one line per step otherwise.
struct Display {
    bar: Option<ProgressBar>,
    print_logs: bool,
    /// Builds plus fetches done at the last line printed.
    last_done: u64,
}

impl Display {
    fn new(print_logs: bool) -> Display {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {wide_msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Display {
            bar,
            print_logs,
            last_done: 0,
        }
    }

    fn show(&mut self, progress: &Progress, event: Option<Event>) {
        let builds = progress.builds();
        let fetches = progress.fetches();
        if let Some(bar) = &self.bar {
            // One bar for both kinds of work: derivations built and paths fetched.
            bar.set_length((builds.expected + fetches.expected).max(1));
            bar.set_position(builds.done + fetches.done);
            bar.set_message(progress.summary());
        }
        let line = match event {
            // Errors come once, in the failure report.
            Some(Event::Message { error: false, text }) => Some(text),
            Some(Event::Log { name, line }) if self.print_logs => Some(format!("{name}> {line}")),
            Some(Event::Started(what)) if self.bar.is_none() => Some(format!("[{}] {what}", progress.counts())),
            Some(Event::Phase { name, phase }) if self.bar.is_none() => Some(format!("{name}: {phase}")),
            _ if self.bar.is_none() && builds.done + fetches.done != self.last_done => Some(progress.counts()),
            _ => None,
        };
        self.last_done = builds.done + fetches.done;
        if let Some(line) = line {
            match &self.bar {
                Some(bar) => bar.println(line),
                // Not `eprintln!`: a closed stderr must not stop a build halfway.
                None => {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::default_spec;

    fn fixture(name: &str) -> Progress {
        let path = format!("{}/tests/fixtures/nix-log/{name}", env!("CARGO_MANIFEST_DIR"));
        Progress::from_log(&std::fs::read_to_string(path).unwrap())
    }

    #[test]
    fn targets_map_to_the_flakes_outputs() {
        let appliance = default_spec();
        let attr = |t: &str| flake_output(&appliance, t, false).unwrap();
        assert_eq!(
            attr("gce-image"),
            FlakeOutput {
                host: "hub".into(),
                attribute: "packages.x86_64-linux.gce-image".into()
            }
        );
        assert_eq!(attr("rpi4").attribute, "packages.aarch64-linux.rpi4");
        assert_eq!(attr("rpi4").host, "pi");
        assert_eq!(attr("hub").attribute, "packages.x86_64-linux.gce-image-hub");
        assert_eq!(attr("pi").attribute, "packages.aarch64-linux.rpi4-pi");
        let cross = |t: &str| flake_output(&appliance, t, true);
        assert_eq!(cross("rpi4").unwrap().attribute, "packages.x86_64-linux.rpi4-cross");
        assert_eq!(cross("pi").unwrap().attribute, "packages.x86_64-linux.rpi4-cross-pi");
        assert!(
            cross("hub")
                .unwrap_err()
                .to_string()
                .contains("--cross is for Raspberry Pi images")
        );
        let unknown = flake_output(&appliance, "nope", false).unwrap_err().to_string();
        assert!(
            unknown.contains("no host `nope`") && unknown.contains("`hub`, `pi`"),
            "{unknown}"
        );
    }

    #[test]
    fn a_spec_without_such_a_host_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("appliance.toml");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/existing-host/appliance.toml"),
            &spec,
        )
        .unwrap();
        let appliance = super::super::load(&spec).unwrap();
        let error = flake_output(&appliance, "gce-image", false).unwrap_err().to_string();
        assert!(error.contains("the spec has no GCE host"), "{error}");
        let host = appliance.hosts.keys().next().unwrap().clone();
        assert_eq!(
            flake_output(&appliance, &host, false).unwrap().attribute,
            format!("nixosConfigurations.{host}.config.system.build.toplevel")
        );
    }

    #[test]
    fn no_aarch64_builder_is_recognised_in_a_recorded_log() {
        let progress = fixture("need-aarch64.log");
        let (system, features) = required_system(&progress.errors[0]).unwrap();
        assert_eq!(system, "aarch64-linux");
        assert!(features.is_empty());
        if this_system() == "x86_64-linux" {
            assert_eq!(hint(&progress.errors, &[]).as_deref(), Some(NO_AARCH64_BUILDER));
        }
    }

    #[test]
    fn missing_kvm_is_recognised_in_a_recorded_log() {
        let progress = fixture("need-kvm.log");
        assert_eq!(hint(&progress.errors, &[]).as_deref(), Some(NO_KVM));
    }

    #[test]
    fn newer_nix_wording_is_recognised_too() {
        // Nix 2.2x and later (derivation-building-goal.cc).
        let message = "error: Cannot build '/nix/store/x-google-compute-image.drv'.\n       Reason: required system or feature not available\n       Required system: 'x86_64-linux' with features {kvm}\n       Current system: 'x86_64-linux' with features {benchmark, big-parallel, nixos-test}";
        assert_eq!(
            required_system(message),
            Some(("x86_64-linux".to_string(), vec!["kvm".to_string()]))
        );
        assert_eq!(hint(&[message.to_string()], &[]).as_deref(), Some(NO_KVM));
    }

    #[test]
    fn qemu_without_kvm_in_the_log_gets_the_kvm_hint() {
        let tail = ["Could not access KVM kernel module: No such file or directory".to_string()];
        assert_eq!(hint(&[], &tail).as_deref(), Some(NO_KVM));
    }

    #[test]
    fn an_unfree_package_is_named() {
        // nixpkgs' check-meta.nix wording.
        let message = "error: Package ‘nvidia-x11-580.95.05-6.12.58’ in /nix/store/x-source/pkgs/os-specific/linux/nvidia-x11/generic.nix:307 has an unfree license (‘unfreeRedistributable’), refusing to evaluate.";
        let hint = hint(&[message.to_string()], &[]).unwrap();
        assert!(hint.starts_with("nvidia-x11-580.95.05-6.12.58 is unfree"), "{hint}");
    }

    #[test]
    fn a_plain_build_failure_has_no_hint_but_its_log_tail() {
        let progress = fixture("fail.log");
        assert_eq!(hint(&progress.errors, &[]), None);
        let text = failure(&progress, Some(1)).to_string();
        assert!(
            text.starts_with("nix build failed (exit code 1)\n  error: builder for '/nix/store/"),
            "{text}"
        );
        assert!(
            text.contains("last 2 log lines of nixlog-fail:\n  | line one\n  | line two"),
            "{text}"
        );
        assert!(!text.contains("hint:"), "{text}");
    }

    #[test]
    fn nix_versions_are_read_from_every_flavour() {
        assert_eq!(nix_version("nix (Nix) 2.8.0\n"), Some((2, 8, 0)));
        assert_eq!(nix_version("nix (Nix) 2.24.10"), Some((2, 24, 10)));
        assert_eq!(nix_version("nix (Lix, like Nix) 2.91.1"), Some((2, 91, 1)));
        assert_eq!(nix_version("nix (Determinate Nix 3.8.2) 2.30.1"), Some((2, 30, 1)));
        assert_eq!(nix_version("nix (Nix) 2.18pre20230101_abc"), Some((2, 18, 0)));
        assert_eq!(nix_version("nix (Nix) 2.26.0pre"), Some((2, 26, 0)));
        assert_eq!(nix_version("garbage"), None);
    }

    #[test]
    fn output_paths_come_from_nix_build_json() {
        let json = r#"[{"drvPath":"/nix/store/a-x.drv","outputs":{"out":"/nix/store/b-x"}}]"#;
        assert_eq!(output_paths(json).unwrap(), ["/nix/store/b-x"]);
        assert!(output_paths("[]").is_err());
    }
}
