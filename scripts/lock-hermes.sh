#!/usr/bin/env bash
# Re-lock Hermes Agent: resolves hermes-agent and its runtime dependencies
# to wheels for CPython 3.13 on one system and writes their PyPI URLs and
# sha256 (SRI) to nix/locks/hermes-<system>.json. Needs Python and PyPI.
#   scripts/lock-hermes.sh [x86_64-linux|aarch64-linux] [version]
set -euo pipefail
system="${1:-x86_64-linux}"
version="${2:-0.19.0}"
arch="${system%%-linux}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q -U pip
# The Matrix extra without `encryption`: python-olm has no wheels and
# libolm is deprecated upstream; the firecrawl client for the crawler.
"$work/venv/bin/pip" install --dry-run --ignore-installed --quiet \
  --report "$work/report.json" --target "$work/target" \
  --only-binary :all: --python-version 3.13 --implementation cp \
  --abi cp313 --abi abi3 --abi none \
  --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" \
  --platform "manylinux2014_$arch" --platform "linux_$arch" \
  "hermes-agent[firecrawl]==$version" \
  mautrix==0.21.0 aiosqlite==0.22.1 asyncpg==0.31.0 aiohttp-socks==0.11.0 aiohttp==3.14.1
python3 - "$work/report.json" "$root/nix/locks/hermes-$system.json" "$system" <<'PY'
import base64, json, sys
report, out, system = sys.argv[1:]
wheels = []
for item in json.load(open(report))["install"]:
    info = item["download_info"]
    digest = bytes.fromhex(info["archive_info"]["hashes"]["sha256"])
    wheels.append({
        "name": item["metadata"]["name"],
        "version": item["metadata"]["version"],
        "url": info["url"],
        "hash": "sha256-" + base64.b64encode(digest).decode(),
    })
wheels.sort(key=lambda w: w["name"].lower())
lock = {
    "_comment": "Wheels of hermes-agent and its runtime dependencies for CPython 3.13 on " + system + ", with the Matrix extra minus `encryption` (python-olm has no wheels and libolm is deprecated) and the firecrawl client. Written by scripts/lock-hermes.sh from `pip install --dry-run --report`; hashes are PyPI's sha256 in SRI form.",
    "python": "3.13",
    "system": system,
    "wheels": wheels,
}
open(out, "w").write(json.dumps(lock, indent=2) + "\n")
print(f"wrote {out}: {len(wheels)} wheels")
PY
