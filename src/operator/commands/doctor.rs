//! `appliance doctor`: whether this machine can run the sandboxes the spec
//! gives it. Each check prints one line; any failure makes the exit code 1.
//!
//! The checks read what the host says about itself (`runsc --version`,
//! `runsc flags`, the Docker daemon settings file, the NVIDIA driver), never
//! what the generator assumes, so a runsc too old for a flag or a driver
//! nvproxy does not know shows up here and not as an opaque sandbox boot
//! failure.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::generator::model::{Appliance, Host};
use crate::generator::render::runtimes::daemon_settings;
use crate::generator::render::{NVPROXY_DRIVERS, RUNSC_MINIMUM};
use crate::generator::runsc::{FlagListing, RunscVersion, platform_name, release_date};
use crate::generator::spec::schema::{Platform, System};
use crate::operator::cli::DoctorArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
pub struct Check {
    pub status: Status,
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, status: Status, subject: impl Into<String>, detail: impl Into<String>) {
        self.checks.push(Check {
            status,
            subject: subject.into(),
            detail: detail.into(),
        });
    }

    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| c.status == Status::Fail).count()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let tag = match check.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            let mut lines = check.detail.lines();
            let _ = writeln!(out, "{tag} {}: {}", check.subject, lines.next().unwrap_or(""));
            for line in lines {
                let _ = writeln!(out, "       {line}");
            }
        }
        out
    }
}

/// Where the doctor looks; the defaults are the real host's paths.
pub struct Probes<'a> {
    pub runsc: &'a Path,
    pub docker_config: &'a Path,
    pub nvidia_version_file: &'a Path,
    pub kvm_device: &'a Path,
    pub docker: &'a Path,
}

pub fn run(args: &DoctorArgs) -> Result<()> {
    let appliance = super::load(&args.spec.spec)?;
    let host = select_host(&appliance, args.host.as_deref())?;
    let report = diagnose(
        host,
        &Probes {
            runsc: &args.runsc,
            docker_config: &args.docker_config,
            nvidia_version_file: &args.nvidia_version_file,
            kvm_device: &args.kvm_device,
            docker: &args.docker,
        },
    );
    // The verdict is the exit code: a reader that stops early keeps it.
    crate::common::term::unless_closed(crate::common::term::print(&format!(
        "host `{}`: {}, {}\n{}",
        host.name,
        super::count(host.sandboxes.len(), "sandbox", "sandboxes"),
        super::count(host.runtimes.len(), "runtime", "runtimes"),
        report.text()
    )))?;
    match report.failures() {
        0 => Ok(()),
        1 => bail!("1 check failed on host `{}`", host.name),
        n => bail!("{n} checks failed on host `{}`", host.name),
    }
}

/// `--host`, else the only host, else the host named like this machine.
fn select_host<'a>(appliance: &'a Appliance, wanted: Option<&str>) -> Result<&'a Host> {
    if let Some(name) = wanted {
        return appliance
            .hosts
            .get(name)
            .ok_or_else(|| super::unknown_host(appliance, name));
    }
    if appliance.hosts.len() == 1 {
        return Ok(appliance.hosts.values().next().expect("one host"));
    }
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match appliance.hosts.get(hostname.trim()) {
        Some(host) => Ok(host),
        None => bail!(
            "the spec has several hosts and none is named `{}`\nhint: pass `--host` with one of: {}",
            hostname.trim(),
            super::host_names(appliance)
        ),
    }
}

/// Output of a command, stdout and stderr together (Go's flag package
/// prints `runsc flags` on stderr).
fn output_of(program: &Path, args: &[&str]) -> std::io::Result<(bool, String)> {
    let output = Command::new(program).args(args).output()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

pub fn diagnose(host: &Host, probes: &Probes) -> Report {
    let mut report = Report::default();
    let runsc = probes.runsc.display().to_string();

    // runsc decides how flags are spelled: what `runsc flags` lists, or
    // failing that its release date.
    let version = match output_of(probes.runsc, &["--version"]) {
        Ok((true, text)) => {
            let first = text.lines().next().unwrap_or("").trim().to_string();
            let listing = flag_listing(probes);
            let version = listing
                .as_ref()
                .and_then(RunscVersion::from_listing)
                .unwrap_or_else(|| RunscVersion::from_version_output(&text));
            report.push(
                Status::Ok,
                "runsc",
                format!("`{runsc}`: {first} (flags spelled as for {version})"),
            );
            check_minimum(host, &text, &mut report);
            match &listing {
                Some(listing) => check_flags(host, listing, version, &mut report),
                None => report.push(Status::Fail, "runsc flags", "`runsc flags` printed no flag listing"),
            }
            Some(version)
        }
        Ok((false, text)) => {
            report.push(
                Status::Fail,
                "runsc",
                format!("`{runsc} --version` failed: {}", text.trim()),
            );
            None
        }
        Err(error) => {
            report.push(
                Status::Fail,
                "runsc",
                format!(
                    "cannot run `{runsc}`: {error}\nhint: install gVisor's runsc (the NixOS module does), or pass `--runsc PATH`"
                ),
            );
            None
        }
    };

    check_platform_device(host, probes, &mut report);
    check_docker(host, probes, version.unwrap_or(RunscVersion::Current), &mut report);
    if let Some(gpu) = &host.gpu {
        let users = gpu_sandboxes(host);
        check_nvidia(probes, version.is_some(), &users, &mut report);
        for sandbox in host.sandboxes.iter().filter(|s| s.gpus) {
            check_sandbox_gpus(probes, &sandbox.name, gpu.count, &mut report);
        }
    }
    report
}

/// The sandboxes that open the GPUs through nvproxy, for the driver check.
fn gpu_sandboxes(host: &Host) -> String {
    let users: Vec<String> = host
        .sandboxes
        .iter()
        .filter(|s| s.gpus)
        .map(|s| format!("`{}` (runtime `{}`)", s.name, s.runtime))
        .collect();
    if users.is_empty() {
        "no sandbox uses the GPUs".to_string()
    } else {
        format!("used through nvproxy by sandbox {}", users.join(", "))
    }
}

/// On a running host: the sandbox lists the GPUs through nvproxy
/// (`nvidia-smi -L`, which the NVIDIA container toolkit's CDI spec mounts).
/// A sandbox that is not running is a warning: the doctor starts nothing.
fn check_sandbox_gpus(probes: &Probes, sandbox: &str, expected: u32, report: &mut Report) {
    let subject = format!("gpus in `{sandbox}`");
    let docker = probes.docker.display().to_string();
    match output_of(probes.docker, &["exec", sandbox, "nvidia-smi", "-L"]) {
        Ok((true, text)) => {
            let seen = text.lines().filter(|l| l.starts_with("GPU ")).count();
            if seen == expected as usize {
                report.push(
                    Status::Ok,
                    subject,
                    format!("the sandbox sees {seen} GPUs, as the spec says"),
                );
            } else {
                report.push(
                    Status::Fail,
                    subject,
                    format!(
                        "the sandbox sees {seen} GPUs, the spec says {expected}:\n{}",
                        text.trim()
                    ),
                );
            }
        }
        Ok((false, text)) => report.push(
            Status::Warn,
            subject,
            format!(
                "not checked: `{docker} exec {sandbox} nvidia-smi -L` failed (is the sandbox running?): {}",
                text.trim()
            ),
        ),
        Err(error) => report.push(
            Status::Warn,
            subject,
            format!("not checked: cannot run `{docker}`: {error}"),
        ),
    }
}

/// The appliance's modules assert gVisor >= `RUNSC_MINIMUM`, which arm64
/// systrap needs on Raspberry Pi kernels; elsewhere an older runsc may work.
/// A runsc that names no release (`VERSION_MISSING`: built without the
/// version ldflag, as nixpkgs' own recipe builds it) is told apart from an
/// old one: its release is unknown, not old.
fn check_minimum(host: &Host, version_output: &str, report: &mut Report) {
    let minimum = release_date(RUNSC_MINIMUM).expect("RUNSC_MINIMUM is a release date");
    let status = if host.system == System::Aarch64Linux {
        Status::Fail
    } else {
        Status::Warn
    };
    match release_date(version_output) {
        Some(date) if date >= minimum => {}
        Some(date) => report.push(
            status,
            "runsc release",
            format!(
                "{date} is older than {RUNSC_MINIMUM}, the release the appliance's modules require (arm64 systrap on Raspberry Pi kernels)"
            ),
        ),
        None => {
            let first = version_output.lines().next().unwrap_or("").trim();
            report.push(
                status,
                "runsc release",
                format!(
                    "`runsc --version` names no release (`{first}`): a build without \
                     `-X gvisor.dev/gvisor/runsc/version.version=release-...`, so whether it is at least \
                     {RUNSC_MINIMUM} (what the appliance's modules require: arm64 systrap on Raspberry Pi \
                     kernels) cannot be told; flags are checked from `runsc flags` below\n\
                     hint: use the appliance's gVisor (nix/packages/gvisor.nix and .ci/gobuild.sh link the \
                     release name), or check which gVisor commit this build is by other means"
                ),
            );
        }
    }
}

/// What the host's runsc lists in `runsc flags`, if it prints a listing.
fn flag_listing(probes: &Probes) -> Option<FlagListing> {
    match output_of(probes.runsc, &["flags"]) {
        Ok((_, text)) if text.contains("  -") => Some(FlagListing::parse(&text)),
        _ => None,
    }
}

fn check_flags(host: &Host, listing: &FlagListing, version: RunscVersion, report: &mut Report) {
    let platform = platform_name(host.platform);
    if listing.has_platform(host.platform) {
        report.push(Status::Ok, "platform", format!("runsc has the `{platform}` platform"));
    } else {
        report.push(
            Status::Fail,
            "platform",
            format!(
                "runsc does not name `{platform}` among its platforms: {}\nhint: set `platform` on host `{}` to one it has, or install a newer gVisor",
                listing.platform_help.trim(),
                host.name
            ),
        );
    }
    for profile in &host.runtimes {
        let subject = format!("runtime `{}`", profile.name());
        let mut names = Vec::new();
        let mut problems = Vec::new();
        for flag in profile
            .flags(host.platform)
            .into_iter()
            .filter(|f| f.needed_on(version))
        {
            match flag.name_and_value(version) {
                Ok((name, _)) if listing.names.contains(name) => names.push(format!("--{name}")),
                Ok((name, _)) => problems.push(format!("runsc has no `--{name}`")),
                Err(error) => problems.push(error.to_string()),
            }
        }
        if problems.is_empty() {
            report.push(Status::Ok, subject, format!("runsc supports {}", names.join(" ")));
        } else {
            report.push(Status::Fail, subject, problems.join("\n"));
        }
    }
}

fn check_platform_device(host: &Host, probes: &Probes, report: &mut Report) {
    let device = probes.kvm_device.display();
    match host.platform {
        Platform::Kvm if probes.kvm_device.exists() => {
            report.push(Status::Ok, "kvm", format!("`{device}` is present"));
        }
        Platform::Kvm => report.push(
            Status::Fail,
            "kvm",
            format!(
                "`platform = \"kvm\"` but `{device}` does not exist\nhint: enable (nested) virtualisation, or use `platform = \"systrap\"`"
            ),
        ),
        Platform::Systrap | Platform::Ptrace => {
            if probes.kvm_device.exists() {
                report.push(
                    Status::Ok,
                    "kvm",
                    format!("`{device}` is present; `platform = \"kvm\"` is an option on bare metal"),
                );
            }
        }
    }
}

fn check_docker(host: &Host, probes: &Probes, version: RunscVersion, report: &mut Report) {
    let path = probes.docker_config.display().to_string();
    let expected = match daemon_settings(host, version).map(|s| serde_json::to_value(s).expect("plain data")) {
        Ok(expected) => expected,
        Err(error) => {
            report.push(
                Status::Fail,
                "docker runtimes",
                format!("cannot spell them for {version}: {error:#}"),
            );
            return;
        }
    };
    let installed: Value = match fs::read_to_string(probes.docker_config)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
    {
        Ok(value) => value,
        Err(error) => {
            report.push(
                Status::Fail,
                "docker runtimes",
                format!(
                    "cannot read `{path}`: {error}\nhint: the NixOS module writes it from `virtualisation.docker.daemon.settings`; elsewhere pass `--docker-config PATH`"
                ),
            );
            return;
        }
    };
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for key in ["default-runtime", "no-new-privileges"] {
        if installed.get(key) != expected.get(key) {
            problems.push(format!(
                "`{key}` is {}, generated {}",
                installed.get(key).unwrap_or(&Value::Null),
                expected[key]
            ));
        }
    }
    let empty = serde_json::Map::new();
    let installed_runtimes = installed.get("runtimes").and_then(Value::as_object).unwrap_or(&empty);
    let expected_runtimes = expected["runtimes"].as_object().unwrap_or(&empty);
    for (name, want) in expected_runtimes {
        let Some(have) = installed_runtimes.get(name) else {
            problems.push(format!("runtime `{name}` is not registered"));
            continue;
        };
        if have.get("runtimeArgs") != want.get("runtimeArgs") {
            problems.push(format!(
                "runtime `{name}` has runtimeArgs {}, generated {}",
                have.get("runtimeArgs").unwrap_or(&Value::Null),
                want["runtimeArgs"]
            ));
        }
        // The module sets a store path; what matters is that it is runsc.
        let binary = have.get("path").and_then(Value::as_str).unwrap_or("");
        if Path::new(binary).file_name().is_none_or(|f| f != "runsc") {
            problems.push(format!("runtime `{name}` runs `{binary}`, not runsc"));
        }
    }
    for name in installed_runtimes.keys() {
        if !expected_runtimes.contains_key(name) {
            warnings.push(format!(
                "runtime `{name}` is registered but not generated; any container may ask for it"
            ));
        }
    }
    let names: Vec<&str> = expected_runtimes.keys().map(String::as_str).collect();
    if problems.is_empty() {
        report.push(
            Status::Ok,
            "docker runtimes",
            format!("`{path}` registers {} as generated", names.join(", ")),
        );
    } else {
        problems.push(format!("hint: compare with `appliance inspect --host {}`", host.name));
        report.push(
            Status::Fail,
            "docker runtimes",
            format!("`{path}`: {}", problems.join("\n")),
        );
    }
    for warning in warnings {
        report.push(Status::Warn, "docker runtimes", warning);
    }
}

/// The driver's version from `/proc/driver/nvidia/version`
/// (`NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build ...`).
pub fn driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version"))?;
    line.split_whitespace()
        .find(|word| {
            word.split('.').count() >= 2
                && word
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

fn check_nvidia(probes: &Probes, have_runsc: bool, users: &str, report: &mut Report) {
    let file = probes.nvidia_version_file.display().to_string();
    let from_file = fs::read_to_string(probes.nvidia_version_file)
        .ok()
        .and_then(|t| driver_version(&t));
    let version = from_file.or_else(|| {
        let (ok, text) = output_of(
            Path::new("nvidia-smi"),
            &["--query-gpu=driver_version", "--format=csv,noheader"],
        )
        .ok()?;
        ok.then(|| text.lines().next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty())
    });
    let Some(version) = version else {
        report.push(
            Status::Fail,
            "nvidia driver",
            format!(
                "the host has GPUs in the spec but no NVIDIA driver is loaded (no `{file}`, no `nvidia-smi`)\nhint: the NixOS module installs the open kernel module; reboot after the first switch"
            ),
        );
        return;
    };
    let listed = if have_runsc {
        output_of(probes.runsc, &["nvproxy", "list-supported-drivers"])
            .ok()
            .filter(|(ok, _)| *ok)
            .map(|(_, text)| {
                text.split_whitespace()
                    .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|list| !list.is_empty())
    } else {
        None
    };
    let (supported, source) = match listed {
        Some(list) => (list, "runsc nvproxy list-supported-drivers".to_string()),
        None => (
            NVPROXY_DRIVERS.iter().map(|s| s.to_string()).collect(),
            "the list built into appliance (the shipped gVisor, release-20260406.0), because this runsc cannot list its own"
                .to_string(),
        ),
    };
    if supported.contains(&version) {
        let status = if source.starts_with("runsc") {
            Status::Ok
        } else {
            Status::Warn
        };
        report.push(
            status,
            "nvidia driver",
            format!("{version} is supported by nvproxy (from {source})\n{users}"),
        );
    } else {
        report.push(
            Status::Fail,
            "nvidia driver",
            format!(
                "{version} is not on nvproxy's supported list (from {source}); GPU sandboxes would fail to boot with `cannot read client sync file`\n{users}\nhint: pin the driver to one of: {}",
                supported.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_version_is_read_from_proc() {
        let text = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16-I3-B03-4-3)  Tue Jul 22 2025\nGCC version:  gcc version 14.2.0\n";
        assert_eq!(driver_version(text).as_deref(), Some("580.65.06"));
        let closed = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.129.03  Thu Oct 19 18:56:32 UTC 2023\n";
        assert_eq!(driver_version(closed).as_deref(), Some("535.129.03"));
        assert_eq!(driver_version("nothing"), None);
    }
}
