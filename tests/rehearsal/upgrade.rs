//! The rehearsal's upgrade step (issue 24, docs/upgrade.md): with the real
//! agents running under gVisor, `appliance upgrade` to a "new system" in
//! which casper's image is one that exits at start (and whose switch first
//! migrates casper's state) fails the health gate and is rolled back: the
//! system (casper's container from its generated options and real image
//! again) and the state (casper's volume as the snapshot had it: the marker
//! written before is back, the migration gone); the gate after the
//! rollback finds every agent answering its probe mention. The caller then
//! asks casper again.
//!
//! The system switch is a stand-in, named so (no NixOS here): a script
//! whose generation 1 is casper's generated `docker run`, and generation 2
//! the same options with a busybox image that exits at start. The real
//! `switch-to-configuration` is the NixOS VM test's (nix/checks/upgrade.nix).

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use crate::hub::Hub;
use crate::support::dockerd::DOCKER;
use crate::support::{STANDIN_SYSTEM_STEPS, require_tool};

const VOLUME: &str = "appliance-casper-state";
const BROKEN: &str = "appliance-rehearsal-upgrade:exits-at-start";

/// The stand-in for the NixOS steps (`--system-program`), up to the steps
/// all stand-ins take alike (`STANDIN_SYSTEM_STEPS`): generation N runs
/// `docker run -d --name casper` with the arguments in `args-N`, one per
/// line.
const STANDIN_SYSTEM: &str = r#"#!/bin/sh
# Stand-in for the NixOS system switch (tests/rehearsal/upgrade.rs).
set -e
dir="$STANDIN_DIR"
docker="$STANDIN_DOCKER"
run() {
  generation=$1
  "$docker" rm -f casper >/dev/null 2>&1 || true
  set --
  while IFS= read -r arg; do set -- "$@" "$arg"; done < "$dir/args-$generation"
  "$docker" run -d --name casper "$@" >/dev/null
}
current=$(cat "$dir/generation")
case "$1" in
  generation) echo "$current" ;;
  switch)
    # The new version migrates casper's state before it starts.
    "$docker" run --rm --network none -v appliance-casper-state:/data --entrypoint /bin/busybox "$STANDIN_BROKEN" \
      sh -c 'echo migrated > /data/upgrade-migrated'
    echo 2 > "$dir/generation"
    run 2 ;;
  diff) echo "casper: its image -> $STANDIN_BROKEN" ;;
"#;

/// Where casper's volume is on the host.
fn volume_dir(hub: &Hub) -> std::path::PathBuf {
    let out = hub
        .daemon
        .docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", VOLUME]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Path::new(String::from_utf8_lossy(&out.stdout).trim()).to_path_buf()
}

/// A busybox image whose command exits 1 at once.
fn import_broken_image(hub: &Hub, dir: &Path) {
    let rootfs = dir.join("broken-rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    let busybox = require_tool("busybox", "the rehearsal's upgrade step").expect("busybox");
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["-c", "."])
        .output()
        .unwrap();
    let mut import = hub
        .daemon
        .command()
        .args(["import", "--change", r#"CMD ["/bin/busybox","false"]"#, "-", BROKEN])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
    assert!(import.wait().unwrap().success(), "docker import of the broken image");
}

/// The stand-in's files: generation 1 is casper as the rehearsal started
/// it, generation 2 the broken image with the same options.
fn write_standin(hub: &Hub, dir: &Path) {
    let (_, casper) = hub.appliance.sandbox("casper").expect("casper's sandbox");
    let options = hub.run_args(casper);
    let mut good = options.clone();
    good.push(casper.image.clone());
    good.extend(casper.command.iter().cloned());
    let mut broken = options;
    broken.push(BROKEN.to_string());
    for (name, args) in [("args-1", good), ("args-2", broken)] {
        assert!(args.iter().all(|a| !a.contains('\n')), "an argument spans lines");
        fs::write(dir.join(name), args.join("\n") + "\n").unwrap();
    }
    fs::write(dir.join("generation"), "1\n").unwrap();
    fs::write(dir.join("system"), format!("{STANDIN_SYSTEM}{STANDIN_SYSTEM_STEPS}")).unwrap();
    fs::set_permissions(dir.join("system"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The plan as the upgrade reads it: only the sandboxes the rehearsal runs
/// (the gate wants every plan sandbox of this host up); and the backup
/// config: casper's volume and the warden's directory, into a local
/// repository.
fn write_configs(hub: &Hub, dir: &Path, running: &[String]) {
    let mut plan: Value = serde_json::from_str(&fs::read_to_string(hub.plan_path()).unwrap()).unwrap();
    let kept: Vec<Value> = plan["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| running.iter().any(|r| s["name"] == r.as_str()))
        .cloned()
        .collect();
    plan["sandboxes"] = json!(kept);
    fs::write(dir.join("plan.json"), plan.to_string()).unwrap();
    let at = |relative: &str| dir.join(relative).display().to_string();
    fs::write(dir.join("password"), "correct horse battery staple\n").unwrap();
    let config = json!({
        "schema": agent_appliance::schema::backup::CONFIG_SCHEMA,
        "appliance": hub.appliance.name, "repository": at("repo"), "password_file": at("password"),
        "staging_dir": at("backup/staging"), "status_file": at("backup/status.json"),
        "unit": "restic-backups-appliance.service",
        "volume_root": hub.daemon.dir().join("data/volumes").display().to_string(),
        "volumes": [{ "name": VOLUME, "agent": "casper" }],
        "paths": [{ "name": "warden", "path": hub.state_dir().join("warden").display().to_string(), "what": "the warden's state and audit trail" }],
        "units": ["docker-casper.service"],
    });
    fs::write(dir.join("backup.json"), config.to_string()).unwrap();
    let init = crate::support::restic(&dir.join("repo"), &dir.join("password"), &["init"]);
    crate::support::assert_succeeded("restic init", &init);
}

pub fn failing_upgrade_is_rolled_back(hub: &Hub, running: &[String]) {
    let dir = hub.host_root.path().join("upgrade");
    fs::create_dir_all(&dir).unwrap();
    import_broken_image(hub, &dir);
    write_standin(hub, &dir);
    write_configs(hub, &dir, running);
    let volume = volume_dir(hub);
    fs::write(volume.join("upgrade-before"), "told before the upgrade\n").unwrap();

    let started = std::time::Instant::now();
    let out = hub
        .netns
        .command(env!("CARGO_BIN_EXE_appliance"))
        .arg("upgrade")
        .arg("--plan")
        .arg(dir.join("plan.json"))
        .arg("--config")
        .arg(dir.join("backup.json"))
        .arg("--state-dir")
        .arg(hub.state_dir())
        .args([
            "--homeserver",
            "http://127.0.0.1:8008",
            "--docker",
            DOCKER,
            "--timeout",
            "180",
        ])
        .arg("--system-program")
        .arg(dir.join("system"))
        .env("DOCKER_HOST", format!("unix://{}", hub.daemon.socket.display()))
        .env("STANDIN_DIR", &dir)
        .env("STANDIN_DOCKER", DOCKER)
        .env("STANDIN_BROKEN", BROKEN)
        .output()
        .expect("failed to run appliance upgrade");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{said}");
    assert_eq!(out.status.code(), Some(1), "the upgrade did not fail:\n{said}");
    for line in [
        "FAILED: sandbox casper",
        "rolling back: the system to generation 1",
        "Rolled back: the system to generation 1, the state to snapshot",
        "After the rollback: healthy, every agent answers",
    ] {
        assert!(
            said.contains(line),
            "the upgrade did not say {line:?}:\n{}",
            hub.all_reports()
        );
    }
    let (_, casper) = hub.appliance.sandbox("casper").unwrap();
    let image = hub.daemon.docker(&["inspect", "-f", "{{.Config.Image}}", "casper"]);
    assert_eq!(String::from_utf8_lossy(&image.stdout).trim(), casper.image);
    assert!(hub.is_running("casper"), "{}", hub.container_report("casper"));
    assert_eq!(
        fs::read_to_string(volume.join("upgrade-before")).unwrap(),
        "told before the upgrade\n"
    );
    assert!(
        !volume.join("upgrade-migrated").exists(),
        "the migration the failed version wrote survived the rollback"
    );
    let audit = fs::read_to_string(hub.state_dir().join("warden/audit.jsonl")).unwrap();
    assert!(
        audit.contains("upgrade.rolled_back"),
        "the audit trail lacks the rollback"
    );
    eprintln!(
        "rehearsal: a failing upgrade of casper was rolled back, system and state, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
