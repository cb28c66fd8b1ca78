//! scripts/gpu-proof.sh, as far as it can be checked without a GPU: `pack`
//! carries everything `run` needs (the shipped runsc, `appliance`, the
//! spec, the CUDA probe and its C library), the runsc flags it packs are the
//! generated Ollama sandbox's, its driver list is `NVPROXY_DRIVERS`, and
//! `check` boots the probe under that runsc. `run` on a machine without a
//! GPU fails as it must; on one with a GPU (`/dev/nvidiactl`) it must pass:
//! that is the GPU proof itself.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use agent_appliance::generator::render::NVPROXY_DRIVERS;
use agent_appliance::operator::commands::load;

use crate::support::{assert_contains, built_runsc, require_tool, root, stderr, stdout};

fn script(dir: &Path, args: &[&str]) -> Output {
    Command::new(dir.join("gpu-proof.sh")).args(args).output().unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn the_gpu_proof_packs_the_ollama_sandboxs_flags_and_boots_its_probe() {
    let Some(_) = built_runsc("scripts/gpu-proof.sh packs the shipped runsc") else {
        return;
    };
    if ["cc", "python3", "sha256sum", "tar"]
        .iter()
        .any(|tool| require_tool(tool, "scripts/gpu-proof.sh pack").is_none())
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let pack = work.path().join("pack");
    let packed = Command::new(root().join("scripts/gpu-proof.sh"))
        .arg("pack")
        .arg(&pack)
        .env("APPLIANCE", env!("CARGO_BIN_EXE_appliance"))
        .output()
        .unwrap();
    assert!(packed.status.success(), "{}{}", stdout(&packed), stderr(&packed));
    assert!(work.path().join("pack.tar.gz").is_file());
    for file in [
        "runsc",
        "appliance",
        "spec/appliance.toml",
        "rootfs/cuda_probe",
        "MANIFEST",
    ] {
        assert!(pack.join(file).is_file(), "{file} is not packed");
    }

    // The flags are the generated Ollama sandbox's runtime's, byte for byte.
    let appliance = load(&root().join("appliance.toml")).unwrap();
    let host = &appliance.hosts["hub"];
    let ollama = host.sandboxes.iter().find(|s| s.name == "ollama").unwrap();
    assert_eq!(lines(&pack.join("host")), ["hub"]);
    assert_eq!(lines(&pack.join("runtime")), [ollama.runtime.as_str()]);
    let daemon: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root().join("generated/hosts/hub/docker-daemon.json")).unwrap())
            .unwrap();
    let generated: Vec<String> = daemon["runtimes"][&ollama.runtime]["runtimeArgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let flags = lines(&pack.join("runsc-flags"));
    assert_eq!(flags, generated);
    assert!(flags.contains(&"--nvproxy=true".to_string()), "{flags:?}");
    assert!(
        flags.contains(&"--nvproxy-allowed-driver-capabilities=compute,utility".to_string()),
        "{flags:?}"
    );
    assert_eq!(lines(&pack.join("nvproxy-drivers")), NVPROXY_DRIVERS);

    let checked = script(&pack, &["check"]);
    let out = format!("{}{}", stdout(&checked), stderr(&checked));
    assert!(checked.status.success(), "{out}");
    assert_contains(&out, "ok   pack: ");
    if !crate::support::require_root("the GPU proof's check boots runsc") {
        return;
    }
    assert_contains(
        &out,
        "ok   boot: the probe ran under runsc --platform=systrap --overlay2=root:memory",
    );
    assert_contains(&out, "cannot load libcuda.so.1");
    if !Path::new("/dev/nvidiactl").exists() {
        assert_contains(
            &out,
            "ok   nvproxy: with the Ollama flags and no GPU, runsc refuses to start",
        );
    }

    let run = script(&pack, &["run"]);
    let out = format!("{}{}", stdout(&run), stderr(&run));
    if Path::new("/dev/nvidiactl").exists() {
        // A GPU host: the proof itself.
        assert!(run.status.success(), "{out}");
        assert!(
            out.contains("cuda-probe: ok") && out.contains("gpu-proof: PASS"),
            "{out}"
        );
    } else {
        assert_eq!(run.status.code(), Some(1), "{out}");
        assert_contains(&out, "FAIL driver: no NVIDIA driver loaded");
        assert_contains(&out, "failed to open /dev/nvidiactl");
        assert_contains(&out, "gpu-proof: FAIL");
    }
}
