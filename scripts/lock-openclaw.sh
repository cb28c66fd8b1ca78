#!/usr/bin/env bash
# Re-lock OpenClaw and its Matrix plugin: writes nix/locks/openclaw/
# package-lock.json with npm's integrity hash for every package. Needs npm
# and the npm registry, nothing else. Then copy the integrity of `openclaw`
# and `@openclaw/matrix` into nix/sources.json.
set -euo pipefail
cd "$(dirname "$0")/../nix/locks/openclaw"
version="${1:-$(python3 -c 'import json; print(json.load(open("package.json"))["dependencies"]["openclaw"])')}"
python3 - "$version" <<'PY'
import json, sys
p = json.load(open("package.json"))
p["version"] = sys.argv[1]
p["dependencies"] = {"openclaw": sys.argv[1], "@openclaw/matrix": sys.argv[1]}
open("package.json", "w").write(json.dumps(p, indent=2) + "\n")
PY
rm -f package-lock.json
# importNpmLock fetches each package from its `resolved` URL: keep them.
npm install --package-lock-only --ignore-scripts --no-audit --no-fund \
  --omit-lockfile-registry-resolved=false
python3 - <<'PY'
import json
lock = json.load(open("package-lock.json"))["packages"]
for name in ("openclaw", "@openclaw/matrix"):
    entry = lock["node_modules/" + name]
    print(f"{name} {entry['version']} {entry['integrity']}")
PY
