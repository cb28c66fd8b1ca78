#!/usr/bin/env bash
# GPU proof: the Ollama sandbox's GPU path through gVisor's nvproxy, on a
# real NVIDIA host, with the runsc the appliance ships.
#
#   scripts/gpu-proof.sh pack [DIR]    on the build machine: everything the
#                                      proof needs into DIR (default
#                                      target/gpu-proof) and DIR.tar.gz
#   DIR/gpu-proof.sh check [DIR]       anywhere: the pack is whole, its runsc
#                                      is the pinned build, its flags are the
#                                      Ollama sandbox's; as root, without a
#                                      GPU: runsc refuses those flags (no
#                                      /dev/nvidiactl), and the probe boots
#                                      under the other flags and finds no
#                                      libcuda
#   DIR/gpu-proof.sh run [DIR]         on the GPU host, as root: the checks
#                                      below; results in DIR/results/
#
# `run` (under 10 minutes; nothing is fetched, only bash, coreutils, grep
# and sed are taken from the host, besides its NVIDIA driver):
#   1. the host's driver version (/proc/driver/nvidia/version) is on the
#      packed runsc's `nvproxy list-supported-drivers`, which is the list
#      the appliance asserts (NVPROXY_DRIVERS; tests/gpu_proof.rs);
#   2. a CUDA probe (tests/probes/cuda_probe.c: NVML driver version and
#      GPU count, cuInit, devices, 64 MiB copied to the GPU and back, a PTX
#      kernel JIT-compiled and run) runs under `runsc run` with exactly the
#      runtime arguments of the spec's Ollama sandbox (runsc-gpu:
#      `--nvproxy=true --nvproxy-allowed-driver-capabilities=compute,utility`),
#      as Ollama's user, with NVIDIA_DRIVER_CAPABILITIES=compute,utility, the
#      host's /dev/nvidia* devices and its libcuda, libnvidia-ml and
#      libnvidia-ptxjitcompiler bound read-only (what the CDI spec gives the
#      real sandbox). Added to the Ollama flags, only for a bare `runsc run`:
#      `--network=none` (the probe needs no network) and `--ignore-cgroups`
#      (Docker sets up cgroups for the real sandbox);
#   3. `appliance doctor` for the spec's GPU host with the packed runsc;
#      its `nvidia driver` line must be ok.
# Exit 0 only when all three hold.
set -euo pipefail

usage() {
  sed -n '2,16p' "$0" >&2
  exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
command=${1:-}
[ -n "$command" ] || usage
shift

# ---------------------------------------------------------------- pack
pack() {
  local repo dir spec host runtime appliance runsc describe
  repo=$(cd "$here/.." && pwd)
  dir=${1:-$repo/target/gpu-proof}
  spec=${SPEC:-$repo/appliance.toml}
  appliance=${APPLIANCE:-$repo/target/debug/appliance}
  runsc=$repo/.ci/go/bin/runsc
  [ -x "$runsc" ] || { echo "error: no $runsc; run .ci/gobuild.sh" >&2; exit 1; }
  [ -x "$appliance" ] || { echo "error: no $appliance; run cargo build, or set APPLIANCE" >&2; exit 1; }
  describe=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gvisor"]["goModule"]["describe"])' "$repo/nix/sources.json")
  [[ $("$runsc" --version) == *"$describe"* ]] \
    || { echo "error: $runsc is not the pinned build $describe; rerun .ci/gobuild.sh" >&2; exit 1; }

  rm -rf "$dir" "$dir.tar.gz"
  mkdir -p "$dir/spec" "$dir/rootfs"
  # The spec's GPU host (HOST to choose), its Ollama sandbox's runtime and
  # that runtime's arguments, as the generator spells them for current runsc.
  "$appliance" inspect --spec "$spec" --format json >"$dir/inspect.json"
  python3 - "$dir" "${HOST:-}" <<'PY'
import json, sys
out, wanted = sys.argv[1], sys.argv[2]
hosts = json.load(open(f"{out}/inspect.json"))["hosts"]
gpu_hosts = [h for h in hosts.values() if h.get("gpu")]
host = hosts[wanted] if wanted else (gpu_hosts[0] if gpu_hosts else None)
if host is None or not host.get("gpu"):
    sys.exit(f"error: no GPU host in the spec{' named ' + wanted if wanted else ''}")
ollama = [s for s in host["sandboxes"] if s["name"] == "ollama"]
if not ollama:
    sys.exit(f"error: host {host['name']} has no `ollama` sandbox")
runtime = ollama[0]["runtime"]
args = host["runtime_args"][runtime]
open(f"{out}/host", "w").write(host["name"] + "\n")
open(f"{out}/runtime", "w").write(runtime + "\n")
open(f"{out}/runsc-flags", "w").write("".join(a + "\n" for a in args))
open(f"{out}/sandbox-user", "w").write((ollama[0]["user"] or "0:0") + "\n")
PY
  host=$(cat "$dir/host")
  runtime=$(cat "$dir/runtime")
  cp "$spec" "$dir/spec/appliance.toml"
  local generated
  generated=$(dirname "$spec")/generated/hosts/$host/docker-daemon.json
  [ -f "$generated" ] && cp "$generated" "$dir/docker-daemon.json"
  cp "$runsc" "$dir/runsc"
  cp "$appliance" "$dir/appliance"
  strip "$dir/appliance" 2>/dev/null || true
  cp "$0" "$dir/gpu-proof.sh"
  "$dir/runsc" nvproxy list-supported-drivers >"$dir/nvproxy-drivers"
  "$dir/runsc" --version >"$dir/runsc-version"

  # The probe and the C library it and libcuda need, from this machine.
  cp "$repo/tests/probes/cuda_probe.c" "$dir/cuda_probe.c"
  cc -std=gnu17 -O2 -Wall -o "$dir/rootfs/cuda_probe" "$repo/tests/probes/cuda_probe.c" -ldl
  local libdir=/lib/x86_64-linux-gnu lib
  mkdir -p "$dir/rootfs/lib64" "$dir/rootfs$libdir" "$dir/rootfs/usr/lib/x86_64-linux-gnu" \
    "$dir/rootfs/proc" "$dir/rootfs/dev" "$dir/rootfs/sys" "$dir/rootfs/tmp"
  cp -L /lib64/ld-linux-x86-64.so.2 "$dir/rootfs/lib64/"
  for lib in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libgcc_s.so.1; do
    [ -e "$libdir/$lib" ] && cp -L "$libdir/$lib" "$dir/rootfs$libdir/"
  done
  # Mount points for the host's driver libraries (empty until `run` binds them).
  for lib in libcuda.so.1 libnvidia-ml.so.1 libnvidia-ptxjitcompiler.so.1; do
    : >"$dir/rootfs/usr/lib/x86_64-linux-gnu/$lib"
  done
  (cd "$dir" && find . -type f ! -name MANIFEST -print0 | sort -z | xargs -0 sha256sum >MANIFEST)
  tar -C "$(dirname "$dir")" -czf "$dir.tar.gz" "$(basename "$dir")"
  echo "packed host \`$host\`, runtime \`$runtime\` ($(tr '\n' ' ' <"$dir/runsc-flags")) into $dir and $dir.tar.gz"
}

# ---------------------------------------------------------------- shared
flags=()
load_pack() {
  dir=$(cd "${1:-$here}" && pwd)
  [ -f "$dir/MANIFEST" ] || { echo "error: $dir is not a gpu-proof pack (no MANIFEST)" >&2; exit 1; }
  mapfile -t flags <"$dir/runsc-flags"
}

# An OCI bundle's config.json for the probe: $1 the bundle, then device
# lines "path major minor" and bind lines "host-file:target" on stdin.
write_config() {
  local bundle=$1 devices="" mounts="" line path major minor source target uid gid
  IFS=: read -r uid gid <"$dir/sandbox-user"
  while read -r line; do
    case $line in
      device\ *)
        read -r _ path major minor <<<"$line"
        devices+="${devices:+,}{\"path\":\"$path\",\"type\":\"c\",\"major\":$major,\"minor\":$minor,\"fileMode\":438,\"uid\":0,\"gid\":0}"
        ;;
      bind\ *)
        source=${line#bind }
        target=${source#*:}
        source=${source%%:*}
        mounts+=",{\"destination\":\"$target\",\"type\":\"bind\",\"source\":\"$source\",\"options\":[\"rbind\",\"ro\"]}"
        ;;
    esac
  done
  cat >"$bundle/config.json" <<EOF
{
  "ociVersion": "1.0.0",
  "process": {
    "terminal": false,
    "user": {"uid": $uid, "gid": $gid},
    "args": ["/cuda_probe"],
    "env": [
      "PATH=/usr/bin:/bin",
      "LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu",
      "NVIDIA_DRIVER_CAPABILITIES=compute,utility",
      "NVIDIA_VISIBLE_DEVICES=all"
    ],
    "cwd": "/tmp",
    "noNewPrivileges": true
  },
  "root": {"path": "$dir/rootfs", "readonly": true},
  "hostname": "gpu-proof",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}$mounts
  ],
  "linux": {
    "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "network"}],
    "devices": [$devices]
  }
}
EOF
}

# Runs the probe under the packed runsc with the runsc flags given after
# the name and log directory (the Ollama runtime's); stdin: write_config's
# lines. Prints the probe's output and runsc's errors; returns the status.
run_probe() {
  local name=$1 log=$2 bundle state rc=0
  shift 2
  bundle=$(mktemp -d)
  state=$(mktemp -d)
  write_config "$bundle"
  mkdir -p "$log"
  (cd "$bundle" && timeout 300 "$dir/runsc" --root "$state" "$@" \
    --network=none --ignore-cgroups --debug --debug-log="$log/" \
    run "$name" </dev/null 2>&1) || rc=$?
  "$dir/runsc" --root "$state" delete --force "$name" >/dev/null 2>&1 || true
  rm -rf "$bundle" "$state"
  return "$rc"
}

# ---------------------------------------------------------------- check
check() {
  load_pack "${1:-}"
  (cd "$dir" && sha256sum --quiet -c MANIFEST) || { echo "FAIL pack: files differ from MANIFEST" >&2; exit 1; }
  echo "ok   pack: $(wc -l <"$dir/MANIFEST") files as packed"
  echo "ok   runsc: $(head -1 "$dir/runsc-version")"
  grep -qx -- "--nvproxy=true" "$dir/runsc-flags" \
    && grep -qx -- "--nvproxy-allowed-driver-capabilities=compute,utility" "$dir/runsc-flags" \
    || { echo "FAIL flags: the Ollama runtime's flags lack nvproxy with compute,utility: ${flags[*]}" >&2; exit 1; }
  echo "ok   flags: runtime \`$(cat "$dir/runtime")\`: ${flags[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "skip boot: not root, the probe was not started under runsc"
    return 0
  fi
  local out rc=0 flag without=()
  # With the exact flags and no GPU, runsc must refuse to start: nvproxy is
  # on and finds no driver (on a GPU host, `run` is the test instead).
  if [ ! -e /dev/nvidiactl ]; then
    out=$(run_probe "gpu-proof-check-$$" "$dir/check-logs" "${flags[@]}" </dev/null) || rc=$?
    if [ "$rc" != 0 ] && grep -q "failed to open /dev/nvidiactl" <<<"$out"; then
      echo "ok   nvproxy: with the Ollama flags and no GPU, runsc refuses to start: $out"
    else
      echo "FAIL nvproxy: expected runsc to look for /dev/nvidiactl and refuse, got exit $rc: $out" >&2
      exit 1
    fi
  fi
  # The rest of the flags, the bundle, the probe's user and its C library
  # boot under runsc: the probe runs and finds no libcuda (no GPU given).
  for flag in "${flags[@]}"; do
    [[ $flag == --nvproxy* ]] || without+=("$flag")
  done
  rc=0
  out=$(run_probe "gpu-proof-boot-$$" "$dir/check-logs" "${without[@]}" </dev/null) || rc=$?
  if [ "$rc" = 2 ] && grep -q "cannot load libcuda.so.1" <<<"$out"; then
    echo "ok   boot: the probe ran under runsc ${without[*]} and, with no GPU given, found no libcuda: $out"
  else
    echo "FAIL boot: expected the probe's 'cannot load libcuda.so.1' (exit 2), got exit $rc: $out" >&2
    exit 1
  fi
}

# ---------------------------------------------------------------- run
find_lib() {
  local name=$1 found="" d
  for d in /run/opengl-driver/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib /lib/x86_64-linux-gnu; do
    if [ -e "$d/$name" ]; then
      found=$(readlink -f "$d/$name")
      break
    fi
  done
  if [ -z "$found" ] && command -v ldconfig >/dev/null; then
    found=$(ldconfig -p | sed -n "s|.*$name .*=> ||p" | head -1)
    [ -n "$found" ] && found=$(readlink -f "$found")
  fi
  echo "$found"
}

run() {
  load_pack "${1:-}"
  [ "$(id -u)" = 0 ] || { echo "error: run as root (runsc run, device nodes)" >&2; exit 1; }
  local results=$dir/results verdict=0 version listed out rc=0 dev lib path
  rm -rf "$results"
  mkdir -p "$results"
  exec > >(tee "$results/summary.txt") 2>&1
  echo "gpu-proof on $(uname -n), $(uname -r), $(date -u +%FT%TZ)"
  echo "runsc: $(head -1 "$dir/runsc-version"); runtime $(cat "$dir/runtime"): ${flags[*]}"
  command -v nvidia-smi >/dev/null && nvidia-smi >"$results/nvidia-smi.txt" 2>&1 || true

  # 1. The driver against nvproxy's list.
  version=$(sed -n 's/^NVRM version:.*  \([0-9][0-9.]*\)  .*/\1/p' /proc/driver/nvidia/version 2>/dev/null | head -1 || true)
  [ -n "$version" ] || version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
  listed=$("$dir/runsc" nvproxy list-supported-drivers | tr '\n' ' ')
  if [ -z "$version" ]; then
    echo "FAIL driver: no NVIDIA driver loaded (no /proc/driver/nvidia/version, no nvidia-smi)"
    verdict=1
  elif grep -qx "$version" "$dir/nvproxy-drivers" && grep -qw "$version" <<<"$listed"; then
    echo "ok   driver: $version is on nvproxy's supported list of the shipped runsc"
  else
    echo "FAIL driver: $version is not on nvproxy's supported list of the shipped runsc: $listed"
    verdict=1
  fi

  # 2. The probe under runsc with the Ollama flags and the host's GPUs.
  {
    for dev in /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools /dev/nvidia[0-9]*; do
      [ -c "$dev" ] || continue
      echo "device $dev $((16#$(stat -c %t "$dev"))) $((16#$(stat -c %T "$dev")))"
    done
    for lib in libcuda.so.1 libnvidia-ml.so.1 libnvidia-ptxjitcompiler.so.1; do
      path=$(find_lib "$lib")
      if [ -n "$path" ]; then
        echo "bind $path:/usr/lib/x86_64-linux-gnu/$lib"
      else
        echo "note: the host has no $lib" >&2
      fi
    done
  } >"$results/bundle-inputs.txt"
  sed 's/^/     /' "$results/bundle-inputs.txt"
  out=$(run_probe "gpu-proof-$$" "$results/runsc-logs" "${flags[@]}" <"$results/bundle-inputs.txt") || rc=$?
  echo "$out" >"$results/probe.txt"
  if [ "$rc" = 0 ] && grep -q "^cuda-probe: ok" <<<"$out"; then
    echo "ok   probe: under runsc --nvproxy with the Ollama flags:"
  else
    echo "FAIL probe: exit $rc (runsc debug logs in $results/runsc-logs/):"
    verdict=1
  fi
  sed 's/^/     /' <<<"$out"

  # 3. appliance doctor for the spec's GPU host with the packed runsc.
  local config=/etc/docker/daemon.json
  [ -f "$config" ] || config=$dir/docker-daemon.json
  rc=0
  "$dir/appliance" doctor --spec "$dir/spec/appliance.toml" --host "$(cat "$dir/host")" \
    --runsc "$dir/runsc" --docker-config "$config" >"$results/doctor.txt" 2>&1 || rc=$?
  if grep -q "^ok   nvidia driver: " "$results/doctor.txt"; then
    echo "ok   doctor: its nvidia driver check passes (doctor exit $rc; full output in doctor.txt, docker config $config)"
  else
    echo "FAIL doctor: its nvidia driver check does not pass (exit $rc)"
    verdict=1
  fi
  sed 's/^/     /' "$results/doctor.txt"
  if [ "$verdict" = 0 ]; then
    echo "gpu-proof: PASS"
  else
    echo "gpu-proof: FAIL"
  fi
  return "$verdict"
}

case $command in
  pack) pack "$@" ;;
  check) check "$@" ;;
  run) run "$@" ;;
  *) usage ;;
esac
