#!/usr/bin/env python3
"""Where an agent's CPU goes, from the profiles `BENCH_PROFILE=DIR
scripts/bench-rehearsal.sh` leaves (benches/rehearsal/profile.rs): one
directory per start, `<agent>-<runtime>-r<round>/`, with `meta.json` (when
the agent was ready and when its round trips ran, in seconds from `docker
run`) and what each profiler wrote:

- `*.cpuprofile` (Node's `--cpu-prof`, OpenClaw): one per process and
  worker thread; each sample placed in time by its profile's start (in
  the file's name, to the second) and split into the start (before ready)
  and the round trips: the windows are that approximate. V8 samples a
  thread's wall time, not its CPU: a thread blocked in a synchronous call
  (a file system call, `Atomics.wait` on a worker) is counted in the
  function that made it, so seconds summed over threads can exceed the
  CPU seconds the container used;
- `start.txt`, `trips.txt` (Hermes: collapsed stacks of the bench's
  Python profiler, benches/rehearsal/pyprof/sitecustomize.py): each
  thread's CPU milliseconds put on the stack it was in, looked at every
  10 ms; the outermost frame names the thread;
- `sentry-start.pprof`, `sentry-trips.pprof` (`runsc debug --profile-cpu`).

For each, the CPU seconds by where the code comes from (the package or
module of the innermost frame; for the sentry, which of the application's
system calls it was serving, or systrap's switching, or Go's runtime) and
the top functions, self and inclusive. Then per agent and window, the runtimes side by side.

usage: scripts/profile-report.py DIR [--top N]
"""

import argparse
import importlib.util
import json
import re
import sys
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pprof_reader():
    spec = importlib.util.spec_from_file_location("pprof_top", HERE / "pprof-top.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_profile


def node_origin(url: str, function: str) -> str:
    """Where a Node frame's code comes from: a package under node_modules,
    Node's own module (node:fs, node:internal/modules/...), OpenClaw's
    dist/, or V8's pseudo-frames ((garbage collector), (program))."""
    if not url:
        return function or "(anonymous)"
    if url.startswith("node:"):
        parts = url.split("/")
        return "/".join(parts[:3]) if url.startswith("node:internal/") else parts[0]
    packages = re.findall(r"node_modules/((?:@[^/]+/)?[^/]+)", url)
    if packages:
        return "npm:" + packages[-1]
    if "/dist/" in url:
        return "openclaw dist/"
    return url.rsplit("/", 1)[-1]


def node_profile_start_s(path: Path):
    """Epoch seconds at which a profile began, from Node's file name
    `CPU.YYYYMMDD.HHMMSS.PID.THREAD.SEQ.cpuprofile` (the sandbox's clock,
    UTC, to the second), and (pid, thread id): thread 0 is a process's main
    thread, others are worker threads."""
    parts = path.name.split(".")
    stamp = datetime.strptime(parts[1] + parts[2], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    return stamp.timestamp(), (int(parts[3]), int(parts[4]))


def node_role(profile, pid: int, thread: int, gateway: int) -> str:
    """The gateway's main thread, a worker thread (by its `…worker…`
    script), or another Node process (OpenClaw's child processes, the start
    script's own)."""
    scripts = sorted({n["callFrame"]["url"].rsplit("/", 1)[-1] for n in profile["nodes"]})
    workers = [u for u in scripts if ".worker." in u] or [u for u in scripts if "worker" in u]
    if thread:
        return "worker " + (workers[0] if workers else "(other)")
    if pid == gateway:
        return "gateway main thread"
    return "child process " + (workers[0] if workers else "(other)")


def read_node(paths, windows):
    """{window: (self by origin, self by function, inclusive by function,
    seconds)} over every profile (every process and worker thread) of one
    start, each sample placed in epoch time by its profile's start; and
    {window: thread-seconds by role}. (idle) is not CPU and is left out."""
    result = {w: (Counter(), Counter(), Counter(), [0.0]) for w in windows}
    roles = {w: Counter() for w in windows}
    profiles = []
    for path in paths:
        began, (pid, thread) = node_profile_start_s(path)
        profiles.append((began, pid, thread, json.loads(path.read_text())))
    gateway = gateway_pid(profiles)
    for began, pid, thread, profile in profiles:
        role = node_role(profile, pid, thread, gateway)
        nodes = {n["id"]: n for n in profile["nodes"]}
        parent = {child: n["id"] for n in profile["nodes"] for child in n.get("children", [])}
        at = profile["startTime"]
        for sample, delta in zip(profile["samples"], profile["timeDeltas"]):
            at += delta
            when = began + (at - profile["startTime"]) / 1e6
            frame = nodes[sample]["callFrame"]
            if frame["functionName"] == "(idle)":
                continue
            weight = delta / 1e6
            for window, (start, end) in windows.items():
                if not start <= when < end:
                    continue
                origin, selfs, inclusive, total = result[window]
                total[0] += weight
                roles[window][role] += weight
                origin[node_origin(frame["url"], frame["functionName"])] += weight
                selfs[f'{frame["functionName"] or "(anonymous)"} {node_origin(frame["url"], "")}'] += weight
                seen, node = set(), sample
                while node is not None:
                    call = nodes[node]["callFrame"]
                    seen.add(f'{call["functionName"] or "(anonymous)"} {node_origin(call["url"], "")}')
                    node = parent.get(node)
                for name in seen:
                    inclusive[name] += weight
    return {w: (o, s, i, t[0]) for w, (o, s, i, t) in result.items()}, roles


def gateway_pid(profiles):
    """The gateway: the process whose main thread was profiled longest (it
    runs from start to stop); a warning when that process had no worker
    thread, as OpenClaw's gateway has (its own profile may be missing)."""
    mains = [(p["endTime"] - p["startTime"], pid) for _, pid, thread, p in profiles if thread == 0]
    if not mains:
        return None
    gateway = max(mains)[1]
    if not any(pid == gateway and thread for _, pid, thread, _ in profiles):
        print(f"warning: the longest-profiled process, pid {gateway}, has no worker thread: "
              "is the gateway's own profile missing?", file=sys.stderr)
    return gateway


def python_origin(frame: str) -> str:
    """`function (path/to/module.py:line)` -> its package or module."""
    match = re.search(r"\((.*?)(?::\d+)?\)$", frame)
    path = match.group(1) if match else frame
    parts = Path(path).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else path
    if "python3" in " ".join(parts[:4]) and len(parts) > 1:
        return "stdlib:" + parts[-1].removesuffix(".py")
    return parts[-1] if parts else path


def read_collapsed(path: Path, per_second: float = 1000.0):
    origin, selfs, inclusive, total = Counter(), Counter(), Counter(), 0.0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        seconds = int(count) / per_second
        # Without line numbers: a function's time in one entry (the
        # profiler writes a function's first line; an earlier version wrote
        # the line running).
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        total += seconds
        origin[python_origin(frames[-1])] += seconds
        selfs[frames[-1]] += seconds
        for frame in set(frames):
            inclusive[frame] += seconds
    return origin, selfs, inclusive, total


def go_package(function: str) -> str:
    """gvisor.dev/gvisor/pkg/sentry/platform/systrap.(*x).y -> pkg/sentry/platform/systrap."""
    head, _, tail = function.rpartition("/")
    package = head + "/" + tail.split(".", 1)[0] if head else tail.split(".", 1)[0]
    return package.removeprefix("gvisor.dev/gvisor/")


def sentry_work(stack) -> str:
    """What the sentry was doing in one sample (innermost frame first):
    serving which of the application's system calls (its handler in
    pkg/sentry/syscalls/linux), else switching to and from the
    application (systrap), else Go's runtime (scheduler, GC, timers)."""
    # The outermost handler frame: the system call's own handler, not a
    # helper it calls (copyInPath, futexWaitAbsolute) or a closure (.func1).
    for function in reversed(stack):
        if "/pkg/sentry/syscalls/linux." in function:
            return "syscall " + re.sub(r"\.func\d+$", "", function).rsplit(".", 1)[-1]
    if any("/platform/systrap" in f for f in stack):
        return "systrap: switching, waiting"
    if any("/pkg/sentry/mm." in f for f in stack):
        return "memory: page faults, mappings"
    if stack and all(f.startswith(("runtime.", "internal/")) for f in stack):
        return "Go runtime"
    return "other: " + go_package(stack[0]) if stack else "(no stack)"


def read_pprof(path: Path, read_profile):
    samples, locations, names = read_profile(str(path))
    work, selfs, inclusive, total = Counter(), Counter(), Counter(), 0.0
    for ids, values in samples:
        seconds = values[-1] / 1e9
        stack = [names[f] for location in ids for f in locations.get(location, [])]
        total += seconds
        work[sentry_work(stack)] += seconds
        if stack:
            selfs[stack[0]] += seconds
        for name in set(stack):
            inclusive[name] += seconds
    return work, selfs, inclusive, total


def table(title: str, counter: Counter, total: float, top: int):
    print(f"\n{title}\n")
    print("| seconds | share | |\n|---|---|---|")
    for name, seconds in counter.most_common(top):
        share = 100 * seconds / total if total else 0
        print(f"| {seconds:.2f} | {share:.0f} % | `{name}` |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    read_profile = pprof_reader()
    # (agent, window, profiler) -> runtime -> [origin counters, totals]
    side_by_side = defaultdict(lambda: defaultdict(list))
    for start in sorted(p for p in Path(args.dir).iterdir() if (p / "meta.json").exists()):
        meta = json.loads((start / "meta.json").read_text())
        agent = meta.get("agent", start.name)
        runtime = start.name.removeprefix(agent + "-").rsplit("-r", 1)[0]
        print(f"\n## {start.name}\n\n{json.dumps(meta)}")
        if "error" in meta:
            print(f"\nthe start failed: {meta['error']}")
            continue
        profiles = []
        cpuprofiles = sorted(start.glob("*.cpuprofile"))
        if cpuprofiles:
            began = meta["started_ms"] / 1000
            windows = {
                # From the first sample on: a profile's start, in its file's
                # name, is cut to the second and can fall before `began`.
                "start": (0.0, began + meta["ready_s"]),
                "trips": (began + meta["trips_from_s"], began + meta["trips_to_s"]),
            }
            found, roles = read_node(cpuprofiles, windows)
            for window in windows:
                profiles.append(("node", window, found[window]))
                table(f"node, {window}: thread-seconds by process and worker thread", roles[window], found[window][3], args.top)
        for window in ("start", "trips"):
            if (start / f"{window}.txt").exists():
                profiles.append(("python", window, read_collapsed(start / f"{window}.txt")))
            if (start / f"sentry-{window}.pprof").exists():
                profiles.append(("sentry", window, read_pprof(start / f"sentry-{window}.pprof", read_profile)))
        for profiler, window, (origin, selfs, inclusive, total) in profiles:
            unit = "thread-seconds (wall)" if profiler == "node" else "CPU s"
            print(f"\n### {profiler}, {window}: {total:.2f} {unit} sampled")
            table("By origin (innermost frame; the sentry: by what it served):", origin, total, args.top)
            table("Self:", selfs, total, args.top)
            table("Inclusive:", inclusive, total, args.top)
            side_by_side[(agent, window, profiler, "origin")][runtime].append((origin, total, meta.get("trips") or 1))
            side_by_side[(agent, window, profiler, "inclusive")][runtime].append(
                (inclusive, total, meta.get("trips") or 1)
            )
    print("\n## Side by side (medians are not taken: each start listed; per round trip where trips)")
    for (agent, window, profiler, by), runtimes in sorted(side_by_side.items()):
        print(f"\n### {agent}, {window}, {profiler}, by {by}\n")
        # The largest in any start, then by the largest spread between
        # starts (where one runtime pays and another does not).
        largest, spread = Counter(), Counter()
        for starts in runtimes.values():
            for counter, _, _ in starts:
                for name, seconds in counter.items():
                    largest[name] = max(largest[name], seconds)
        for name in largest:
            values = [c[name] for starts in runtimes.values() for c, _, _ in starts]
            spread[name] = max(values) - min(values)
        shown = [n for n, _ in largest.most_common(args.top)]
        shown += [n for n, _ in spread.most_common(args.top) if n not in shown]
        columns = [(r, i) for r, starts in sorted(runtimes.items()) for i in range(len(starts))]
        print("| origin | " + " | ".join(f"{r} #{i}" for r, i in columns) + " |")
        print("|---|" + "---|" * len(columns))
        per = lambda r, i: runtimes[r][i][2] if window == "trips" else 1
        print(
            "| **sampled (CPU s; node: thread-seconds)** | "
            + " | ".join(f"{runtimes[r][i][1] / per(r, i):.2f}" for r, i in columns)
            + " |"
        )
        for name in shown:
            print(
                f"| `{name}` | " + " | ".join(f"{runtimes[r][i][0][name] / per(r, i):.2f}" for r, i in columns) + " |"
            )


if __name__ == "__main__":
    main()
