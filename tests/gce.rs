//! `appliance gce`: the printed steps for the default spec, pinned, and
//! every missing value refused by name.

use crate::support::{assert_contains, assert_lacks, root, run_in, stderr, stdout};

#[test]
fn the_default_specs_steps_are_pinned() {
    let output = run_in(
        &root(),
        &[
            "gce",
            "--project",
            "my-project",
            "--zone",
            "us-central1-a",
            "--bucket",
            "my-bucket",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    insta::assert_snapshot!("gce-default-spec", stdout(&output));
}

#[test]
fn missing_values_are_named_and_nothing_is_guessed() {
    let missing = |args: &[&str], expected: &str| {
        let mut all = vec!["gce"];
        all.extend(args);
        let output = crate::support::appliance()
            .args(&all)
            .current_dir(root())
            .env_remove("APPLIANCE_SPEC")
            .env_remove("APPLIANCE_GCE_PROJECT")
            .env_remove("APPLIANCE_GCE_ZONE")
            .env_remove("APPLIANCE_GCE_BUCKET")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&output), expected, "{args:?}");
        assert!(stdout(&output).is_empty());
    };
    missing(
        &[],
        "error: missing --project, --zone and --bucket\nhint: the steps need a project, a zone and a bucket; nothing is guessed\n",
    );
    missing(
        &["--project", "p1", "--bucket", "b"],
        "error: missing --zone\nhint: pass --zone or set APPLIANCE_GCE_ZONE\n",
    );
    missing(
        &["--project", "p1", "--zone", "z", "--bucket", "b", "--host", "pi"],
        "error: host `pi` is not a GCE host (its target is not `gce`)\n",
    );
}

/// A directory with the default spec, `from` replaced by `to` in it.
fn default_spec_with(from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let spec = std::fs::read_to_string(root().join("appliance.toml"))
        .unwrap()
        .replace(from, to);
    std::fs::write(dir.path().join("appliance.toml"), spec).unwrap();
    dir
}

#[test]
fn a_gpu_count_no_machine_type_brings_is_refused() {
    let dir = default_spec_with("count = 8", "count = 3");
    let output = run_in(dir.path(), &["gce", "--project", "p1", "--zone", "z", "--bucket", "b"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("error: G2 machine types come with 1, 2, 4, 8 l4 GPUs, not 3\n"),
        "{}",
        stderr(&output)
    );
    let chosen = run_in(
        dir.path(),
        &[
            "gce",
            "--project",
            "p1",
            "--zone",
            "z",
            "--bucket",
            "b",
            "--machine-type",
            "g2-standard-48",
        ],
    );
    assert!(chosen.status.success(), "{}", stderr(&chosen));
    assert!(stdout(&chosen).contains("--machine-type=g2-standard-48 \\\n"));
}

/// `--run` with a stand-in `gcloud` (a shell script that records its
/// arguments and answers `describe` with a documentation address): the
/// same steps run in order, the upload gets the resolved image file, and
/// the address found is the one to SSH to.
#[test]
fn run_invokes_gcloud_step_by_step() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("gcloud.log");
    let stand_in = bin.join("gcloud");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\n# stand-in for gcloud: records its arguments\necho \"$*\" >> {}\ncase \"$*\" in *describe*) echo 203.0.113.7;; esac\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let result = dir.path().join("result-hub");
    std::fs::create_dir(&result).unwrap();
    std::fs::write(result.join("nixos-image-26.05-x86_64-linux.raw.tar.gz"), b"stand-in").unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let output = crate::support::appliance()
        .args([
            "gce",
            "--project",
            "p1",
            "--zone",
            "z1",
            "--bucket",
            "b1",
            "--run",
            "--image",
        ])
        .arg(&result)
        .current_dir(root())
        .env("PATH", path)
        .env_remove("APPLIANCE_SPEC")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert_eq!(
        calls[0],
        format!(
            "storage cp {}/nixos-image-26.05-x86_64-linux.raw.tar.gz gs://b1/magi-hub.raw.tar.gz --project=p1",
            result.display()
        )
    );
    assert!(calls[1].starts_with("compute images create magi-hub"), "{}", calls[1]);
    assert!(
        calls[2].starts_with("compute firewall-rules create magi-hub-wireguard"),
        "{}",
        calls[2]
    );
    assert!(
        calls[3].starts_with("compute instances create magi-hub")
            && calls[3].contains("--maintenance-policy=TERMINATE")
            && calls[3].contains("--no-service-account --no-scopes"),
        "{}",
        calls[3]
    );
    assert!(
        calls[4].starts_with("compute instances describe magi-hub"),
        "{}",
        calls[4]
    );
    assert!(
        stdout(&output).starts_with("ssh root@203.0.113.7    # with a key from [hosts.hub] ssh-keys\n"),
        "{}",
        stdout(&output)
    );
    assert!(stderr(&output).contains("[4/5] Create the VM: gcloud compute instances create"));
}

#[test]
fn an_unknown_gpu_takes_the_machine_type_its_hint_asks_for() {
    let dir = default_spec_with("model = \"l4\", count = 8", "model = \"rtx-pro-6000\", count = 1");
    let flags = ["gce", "--project", "p1", "--zone", "z", "--bucket", "b"];
    let refused = run_in(dir.path(), &flags);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("no GCE machine type is known here for GPU model `rtx-pro-6000`\nhint: ")
            && stderr(&refused).contains("or pass --machine-type\n"),
        "{}",
        stderr(&refused)
    );
    let mut with_type = flags.to_vec();
    with_type.extend(["--machine-type", "g4-standard-48"]);
    let chosen = run_in(dir.path(), &with_type);
    assert!(chosen.status.success(), "{}", stderr(&chosen));
    let script = stdout(&chosen);
    assert_contains(&script, "--machine-type=g4-standard-48 \\\n");
    assert_lacks(&script, "--accelerator=");
    assert_contains(&script, "must come with its GPUs");
}
