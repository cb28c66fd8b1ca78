//! `appliance gce`: the gcloud steps that turn the GCE host's built image
//! into a running GPU VM, printed (default) or run (`--run`).
//!
//! Every value comes from the spec or a flag: the project, zone and bucket
//! are required, the machine type follows from the host's GPUs (or
//! `--machine-type`), and the guest OS features from how the image boots.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};

use crate::common::shell::shell_word;
use crate::generator::model::vram::{GceOffer, gce_models, gpu_model};
use crate::generator::model::{Appliance, Gpu, Host, WIREGUARD_PORT};
use crate::generator::spec::schema::Target;
use crate::operator::cli::GceArgs;

/// How nix/targets/gce.nix boots: nixpkgs' google-compute-image.nix with
/// `virtualisation.googleComputeImage.efi` unset makes an MBR disk with
/// GRUB for legacy BIOS (`partitionTableType = "legacy"`), so the image must
/// not claim `UEFI_COMPATIBLE`. A test keeps this in step with that file.
pub const BOOTS_WITH_UEFI: bool = false;

/// Guest OS features of the image: virtio-scsi is in its initrd
/// (google-compute-config.nix), gVNIC's `gve` driver is a module of
/// nixpkgs' kernel; G2 and A3 machines take only gVNIC network cards.
pub fn guest_os_features() -> Vec<&'static str> {
    let mut features = vec!["VIRTIO_SCSI_MULTIQUEUE", "GVNIC"];
    if BOOTS_WITH_UEFI {
        features.push("UEFI_COMPATIBLE");
    }
    features
}

/// A GPU's machine type and, for N1 GPUs, the accelerator to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub machine_type: String,
    /// `--accelerator=...`, only where the machine type does not bring its GPUs.
    pub accelerator: Option<String>,
    pub why: String,
}

/// The machine type for `count` GPUs of `model`: the smallest of the family
/// that comes with exactly that many (G2: L4, A2: A100, A3: H100), or an
/// N1 with `--accelerator` for older models, whose size the user picks.
pub fn machine_for(gpu: &Gpu, machine_type: Option<&str>) -> Result<Machine> {
    if gpu.vendor != "nvidia" {
        bail!("GCE offers only NVIDIA GPUs; the spec asks for `{}`", gpu.vendor);
    }
    let model = gpu.model.to_ascii_lowercase();
    let count = gpu.count;
    let bundled = |family: &str, types: &[(u32, &str)]| -> Result<Machine> {
        let found = types.iter().find(|(n, _)| *n == count).map(|(_, t)| t.to_string());
        let chosen = machine_type.map(str::to_string).or(found).ok_or_else(|| {
            anyhow!(
                "{family} machine types come with {} {model} GPUs, not {count}\nhint: change the spec's GPU count, or pass --machine-type",
                types.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>().join(", ")
            )
        })?;
        Ok(Machine {
            why: format!("{count} x {model}: {family} machine types come with their GPUs attached"),
            machine_type: chosen,
            accelerator: None,
        })
    };
    match gpu_model(&model).and_then(|known| known.gce) {
        Some(GceOffer::Bundled { family, types }) => bundled(family, types),
        Some(GceOffer::N1) => {
            let machine_type = machine_type.ok_or_else(|| {
                anyhow!(
                    "{model} GPUs attach to an N1 machine type whose size you choose\nhint: pass --machine-type, e.g. --machine-type n1-standard-16"
                )
            })?;
            Ok(Machine {
                machine_type: machine_type.to_string(),
                accelerator: Some(format!("type=nvidia-tesla-{model},count={count}")),
                why: format!("{count} x {model}, attached to an N1 machine type"),
            })
        }
        // A model GCE does not offer as far as the catalog knows: the user
        // names a machine type that brings its GPUs (as G2/A2/A3 do);
        // nothing is attached.
        None => match machine_type {
            Some(machine_type) => Ok(Machine {
                machine_type: machine_type.to_string(),
                accelerator: None,
                why: format!(
                    "{count} x {model}: a model appliance does not know on GCE, so the machine type given \
                     (`{machine_type}`) must come with its GPUs; no --accelerator is added"
                ),
            }),
            None => bail!(
                "no GCE machine type is known here for GPU model `{model}`\nhint: known models: {}; or pass --machine-type",
                gce_models().join(", ")
            ),
        },
    }
}

/// One gcloud invocation and why it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub title: String,
    pub notes: Vec<String>,
    pub args: Vec<String>,
    /// Indexes of arguments already written as shell words (the upload's
    /// glob), printed as they are.
    pub shell_words: Vec<usize>,
}

/// The values every step needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: String,
    pub zone: String,
    pub bucket: String,
    /// The image file, or the build result directory holding it.
    pub image: PathBuf,
    pub machine_type: Option<String>,
    pub disk_size: u32,
}

/// The GCE host: `--host`, or the spec's only GCE host.
pub fn gce_host<'a>(appliance: &'a Appliance, name: Option<&str>) -> Result<&'a Host> {
    if let Some(name) = name {
        let host = appliance
            .hosts
            .get(name)
            .ok_or_else(|| super::unknown_host(appliance, name))?;
        if host.target != Target::Gce {
            bail!("host `{name}` is not a GCE host (its target is not `gce`)");
        }
        return Ok(host);
    }
    let hosts: Vec<&Host> = appliance.hosts.values().filter(|h| h.target == Target::Gce).collect();
    match hosts.as_slice() {
        [one] => Ok(one),
        [] => bail!("the spec has no host with `target = \"gce\"`"),
        many => bail!(
            "the spec has {} GCE hosts\nhint: pass --host {}",
            many.len(),
            many.iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(" or --host ")
        ),
    }
}

/// The upload's source as a shell word: the image file, or every
/// `.raw.tar.gz` of a build result (one, as nixpkgs makes it).
fn image_source(image: &Path) -> String {
    let text = image.display().to_string();
    if text.ends_with(".tar.gz") {
        shell_word(&text)
    } else {
        format!("{}/*.raw.tar.gz", shell_word(&text))
    }
}

/// Every step, in order.
pub fn steps(appliance: &Appliance, host: &Host, settings: &Settings) -> Result<Vec<Step>> {
    let name = format!("{}-{}", appliance.name, host.name);
    if name.len() > 63 {
        bail!("`{name}` is longer than the 63 characters GCE allows for image and instance names");
    }
    let object = format!("gs://{}/{name}.raw.tar.gz", settings.bucket);
    let project = format!("--project={}", settings.project);
    let zone = format!("--zone={}", settings.zone);
    let mut steps = vec![
        Step {
            title: "Upload the image".into(),
            notes: vec![format!(
                "built by `appliance build {}`: a raw disk in a tar.gz, the form GCE imports",
                host.name
            )],
            args: vec![
                "storage".into(),
                "cp".into(),
                image_source(&settings.image),
                object.clone(),
                project.clone(),
            ],
            shell_words: vec![2],
        },
        Step {
            title: "Create the image".into(),
            notes: vec![
                "it boots legacy BIOS from an MBR disk (nixpkgs' google-compute-image.nix, EFI off): no UEFI_COMPATIBLE".into(),
                "virtio-scsi and gVNIC drivers are in its kernel".into(),
            ],
            args: vec![
                "compute".into(),
                "images".into(),
                "create".into(),
                name.clone(),
                project.clone(),
                format!("--family={name}"),
                format!("--source-uri={object}"),
                format!("--guest-os-features={}", guest_os_features().join(",")),
            ],
            shell_words: vec![],
        },
    ];
    if appliance.overlay.is_some() {
        steps.push(Step {
            title: "Let WireGuard in".into(),
            notes: vec![format!(
                "the overlay to the other hosts (docs/pairing.md): UDP {WIREGUARD_PORT}, to this VM only; the default network lets SSH in"
            )],
            args: vec![
                "compute".into(),
                "firewall-rules".into(),
                "create".into(),
                format!("{name}-wireguard"),
                project.clone(),
                format!("--allow=udp:{WIREGUARD_PORT}"),
                format!("--target-tags={name}"),
            ],
            shell_words: vec![],
        });
    }
    steps.push(create_instance(host, settings, &name, &project, &zone)?);
    steps.push(Step {
        title: "Find its external address".into(),
        notes: vec![],
        args: vec![
            "compute".into(),
            "instances".into(),
            "describe".into(),
            name,
            project,
            zone,
            "--format=get(networkInterfaces[0].accessConfigs[0].natIP)".into(),
        ],
        shell_words: vec![],
    });
    Ok(steps)
}

fn create_instance(host: &Host, settings: &Settings, name: &str, project: &str, zone: &str) -> Result<Step> {
    let mut notes = Vec::new();
    let mut args: Vec<String> = vec![
        "compute".into(),
        "instances".into(),
        "create".into(),
        name.into(),
        project.into(),
        zone.into(),
    ];
    match (&host.gpu, &settings.machine_type) {
        (Some(gpu), machine_type) => {
            let machine = machine_for(gpu, machine_type.as_deref())?;
            notes.push(machine.why.clone());
            notes.push(format!(
                "the zone must offer them: gcloud compute accelerator-types list --filter=zone:{}",
                settings.zone
            ));
            args.push(format!("--machine-type={}", machine.machine_type));
            if let Some(accelerator) = machine.accelerator {
                args.push(format!("--accelerator={accelerator}"));
            }
            notes.push("GPU VMs cannot live-migrate: they stop for host maintenance".into());
            args.push("--maintenance-policy=TERMINATE".into());
        }
        (None, Some(machine_type)) => args.push(format!("--machine-type={machine_type}")),
        (None, None) => bail!(
            "host `{}` declares no GPU, so no machine type follows from the spec\nhint: pass --machine-type",
            host.name
        ),
    }
    notes.push(
        "no service account: the sandboxes can reach the metadata server and must not find a Google token there".into(),
    );
    notes.push("OS Login for `gcloud compute ssh`, besides the spec's SSH keys".into());
    args.extend([
        format!("--image={name}"),
        format!("--image-project={}", settings.project),
        format!("--boot-disk-size={}GB", settings.disk_size),
        "--boot-disk-type=pd-balanced".into(),
        "--network-interface=nic-type=GVNIC".into(),
        format!("--tags={name}"),
        "--metadata=enable-oslogin=TRUE".into(),
        "--no-service-account".into(),
        "--no-scopes".into(),
    ]);
    notes.push(format!(
        "boot disk {} GB (--disk-size): the root file system grows to fill it, and holds the models",
        settings.disk_size
    ));
    Ok(Step {
        title: "Create the VM".into(),
        notes,
        args,
        shell_words: vec![],
    })
}

/// How to reach the VM once it runs.
pub fn reach(appliance: &Appliance, host: &Host, settings: &Settings, address: &str) -> Vec<String> {
    let mut lines = vec![
        format!("ssh root@{address}    # with a key from [hosts.{}] ssh-keys", host.name),
        format!(
            "# or, through OS Login: gcloud compute ssh {}-{} --project={} --zone={}",
            appliance.name, host.name, settings.project, settings.zone
        ),
    ];
    if host.ssh_keys.is_empty() {
        lines.push(format!(
            "# note: [hosts.{}] has no ssh-keys, so only OS Login lets you in; add a key, `appliance generate`, build again to ssh as root",
            host.name
        ));
    }
    if let (Some(_), Some(overlay_address)) = (&appliance.overlay, host.overlay_address) {
        lines.push(format!(
            "# overlay: set `endpoint = \"{address}\"` and the hosts' WireGuard keys in the spec, regenerate and rebuild (docs/pairing.md);"
        ));
        lines.push(format!(
            "# the other hosts then reach this one at {overlay_address} on wg-appliance"
        ));
    }
    lines
}

/// The steps as a commented shell script.
pub fn script(appliance: &Appliance, host: &Host, settings: &Settings, steps: &[Step]) -> String {
    let mut out = format!(
        "# GCE steps for host `{}` of appliance `{}`\n",
        host.name, appliance.name
    );
    for (n, step) in steps.iter().enumerate() {
        out.push_str(&format!("\n# {}. {}\n", n + 1, step.title));
        for note in &step.notes {
            out.push_str(&format!("#    {note}\n"));
        }
        out.push_str("gcloud");
        for (i, arg) in step.args.iter().enumerate() {
            let word = if step.shell_words.contains(&i) {
                arg.clone()
            } else {
                shell_word(arg)
            };
            let breaks = arg.starts_with("--") && step.args.len() > 6;
            out.push_str(if breaks { " \\\n    " } else { " " });
            out.push_str(&word);
        }
        out.push('\n');
    }
    out.push_str(&format!("\n# {}. Reach it\n", steps.len() + 1));
    for line in reach(appliance, host, settings, "EXTERNAL_IP") {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A required value, with which flag to pass when it is missing; values
/// end up in gcloud arguments and names, so only their characters pass.
fn required(value: &Option<String>, flag: &str, env: &str) -> Result<String> {
    let value = value
        .as_deref()
        .ok_or_else(|| anyhow!("missing --{flag}\nhint: pass --{flag} or set {env}"))?;
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c))
    {
        bail!("--{flag} `{value}` is not a GCE {flag} name (lowercase letters, digits, `-`, `.`, `_`)");
    }
    Ok(value.to_string())
}

pub fn run(args: &GceArgs) -> Result<()> {
    let appliance = super::load(&args.spec.spec)?;
    let host = gce_host(&appliance, args.host.as_deref())?;
    let missing: Vec<&str> = [
        ("project", &args.project),
        ("zone", &args.zone),
        ("bucket", &args.bucket),
    ]
    .iter()
    .filter(|(_, v)| v.is_none())
    .map(|(f, _)| *f)
    .collect();
    if missing.len() > 1 {
        bail!(
            "missing {}\nhint: the steps need a project, a zone and a bucket; nothing is guessed",
            and_list(&missing.iter().map(|f| format!("--{f}")).collect::<Vec<_>>())
        );
    }
    let settings = Settings {
        project: required(&args.project, "project", "APPLIANCE_GCE_PROJECT")?,
        zone: required(&args.zone, "zone", "APPLIANCE_GCE_ZONE")?,
        bucket: required(&args.bucket, "bucket", "APPLIANCE_GCE_BUCKET")?,
        image: args.image.clone().unwrap_or_else(|| {
            args.spec
                .spec
                .parent()
                .unwrap_or(Path::new(""))
                .join(format!("result-{}", host.name))
        }),
        machine_type: args.machine_type.clone(),
        disk_size: args.disk_size,
    };
    let steps = steps(&appliance, host, &settings)?;
    if !args.run {
        return crate::common::term::print(&script(&appliance, host, &settings, &steps));
    }
    run_steps(&appliance, host, &settings, steps)
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Runs each step with gcloud, stopping at the first failure with what is
/// done and what is not.
fn run_steps(appliance: &Appliance, host: &Host, settings: &Settings, mut steps: Vec<Step>) -> Result<()> {
    steps[0].args[2] = resolve_image(&settings.image)?.display().to_string();
    let total = steps.len();
    let mut address = String::new();
    for (n, step) in steps.iter().enumerate() {
        // Never a panic between two steps: a closed log is no reason to
        // leave half a VM behind.
        crate::common::term::eprintln(&format!(
            "[{}/{total}] {}: gcloud {}",
            n + 1,
            step.title,
            step.args.join(" ")
        ));
        let output = Command::new("gcloud")
            .args(&step.args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| {
                anyhow!("failed to run `gcloud`: {e}\nhint: install the Google Cloud CLI and `gcloud auth login`")
            })?;
        if !output.status.success() {
            bail!(
                "step {} of {total} ({}) failed: gcloud exited with {}\n{}",
                n + 1,
                step.title,
                output.status,
                if n == 0 {
                    "nothing was created".to_string()
                } else {
                    format!(
                        "steps 1 to {n} are done ({}); fix the cause and run the rest by hand from `appliance gce` without --run",
                        steps[..n]
                            .iter()
                            .map(|s| s.title.to_lowercase())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
        let printed = String::from_utf8_lossy(&output.stdout);
        if n + 1 < total {
            crate::common::term::unless_closed(crate::common::term::print(&printed))?;
        } else {
            address = printed.trim().to_string();
        }
    }
    let text: String = reach(appliance, host, settings, &address)
        .iter()
        .map(|line| format!("{line}\n"))
        .collect();
    crate::common::term::print(&text)
}

/// The image file: given, or the one `.raw.tar.gz` of a build result.
fn resolve_image(image: &Path) -> Result<PathBuf> {
    if image.is_file() {
        return Ok(image.to_path_buf());
    }
    let found: Vec<PathBuf> = std::fs::read_dir(image)
        .with_context(|| {
            format!(
                "no image at `{}`\nhint: run `appliance build gce-image` first, or pass --image",
                image.display()
            )
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".raw.tar.gz"))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one `.raw.tar.gz` in `{}`, found {}\nhint: pass --image",
            image.display(),
            found.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l4s_pick_the_g2_that_brings_them() {
        let pick = |n| machine_for(&Gpu::nvidia("l4", n), None).unwrap().machine_type;
        assert_eq!(pick(1), "g2-standard-4");
        assert_eq!(pick(2), "g2-standard-24");
        assert_eq!(pick(4), "g2-standard-48");
        assert_eq!(pick(8), "g2-standard-96");
        let error = machine_for(&Gpu::nvidia("l4", 3), None).unwrap_err().to_string();
        assert!(
            error.starts_with("G2 machine types come with 1, 2, 4, 8 l4 GPUs, not 3"),
            "{error}"
        );
        assert_eq!(machine_for(&Gpu::nvidia("L4", 8), None).unwrap().accelerator, None);
    }

    #[test]
    fn older_gpus_attach_to_an_n1_the_user_sizes() {
        let error = machine_for(&Gpu::nvidia("t4", 2), None).unwrap_err().to_string();
        assert!(error.contains("pass --machine-type"), "{error}");
        let machine = machine_for(&Gpu::nvidia("t4", 2), Some("n1-standard-16")).unwrap();
        assert_eq!(machine.machine_type, "n1-standard-16");
        assert_eq!(machine.accelerator.as_deref(), Some("type=nvidia-tesla-t4,count=2"));
    }

    #[test]
    fn unknown_models_and_vendors_are_refused() {
        assert!(machine_for(&Gpu::nvidia("rtx9000", 1), None).is_err());
        let mut amd = Gpu::nvidia("mi300", 1);
        amd.vendor = "amd".into();
        assert!(machine_for(&amd, None).unwrap_err().to_string().contains("only NVIDIA"));
    }

    #[test]
    fn the_boot_mode_matches_the_gce_target_profile() {
        // nix/targets/gce.nix must not turn EFI on while the image is
        // created without UEFI_COMPATIBLE (and the other way round).
        let profile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nix/targets/gce.nix")).unwrap();
        let sets_efi = profile
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains("googleComputeImage.efi") && l.contains("true"));
        assert_eq!(sets_efi, BOOTS_WITH_UEFI);
        assert!(!guest_os_features().contains(&"UEFI_COMPATIBLE"));
    }

    #[test]
    fn missing_values_name_their_flag() {
        let error = required(&None, "zone", "APPLIANCE_GCE_ZONE").unwrap_err().to_string();
        assert_eq!(error, "missing --zone\nhint: pass --zone or set APPLIANCE_GCE_ZONE");
        assert!(required(&Some("My Project".into()), "project", "X").is_err());
    }

    #[test]
    fn odd_paths_are_quoted_for_the_shell() {
        assert_eq!(image_source(Path::new("result-hub")), "result-hub/*.raw.tar.gz");
        assert_eq!(
            image_source(Path::new("my images/x.raw.tar.gz")),
            "'my images/x.raw.tar.gz'"
        );
        assert_eq!(image_source(Path::new("it's")), "'it'\\''s'/*.raw.tar.gz");
    }
}
