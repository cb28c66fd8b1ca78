#!/usr/bin/env bash
# Times `appliance bootstrap` of the default spec against a local Synapse
# (SQLite, loopback, the generated homeserver settings): one fresh run
# (Synapse already up, so its start-up is not counted) and five reruns.
# Targets (issue 6): fresh < 5 s, rerun < 1 s. Numbers go in docs/bootstrap.md.
#
# usage: scripts/bench-bootstrap.sh      (venv: $APPLIANCE_SYNAPSE_VENV or .ci/venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${APPLIANCE_SYNAPSE_VENV:-.ci/venv}"
[ -x "$venv/bin/python" ] || { echo "error: no Synapse venv at $venv (see .ci/run)" >&2; exit 1; }

cargo build --release --quiet
bin="$PWD/target/release/appliance"
plan="$PWD/generated/bootstrap/plan.json"
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
url="http://127.0.0.1:$port"
synapse_pid=""
cleanup() {
  if [ -n "$synapse_pid" ]; then
    kill -TERM "$synapse_pid" 2>/dev/null || true
    wait "$synapse_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" bootstrap --plan "$plan" --state-dir "$work/state" --secrets-only >/dev/null

# The generated settings, with only the database, data paths, secret paths
# and the listener changed.
python3 - "$work" "$port" <<'EOF'
import json, sys
work, port = sys.argv[1], int(sys.argv[2])
s = json.load(open("generated/hosts/hub/synapse.json"))
s["listeners"][0]["port"] = port
s["listeners"][0]["bind_addresses"] = ["127.0.0.1"]
s["public_baseurl"] = f"http://127.0.0.1:{port}/"
# SQLite, not the generated PostgreSQL: the bench starts no database
# server; it times the bootstrap's requests, not Synapse's storage.
s["database"] = {"name": "sqlite3", "args": {"database": f"{work}/homeserver.db"}}
s["media_store_path"] = f"{work}/media"
s["signing_key_path"] = f"{work}/signing.key"
s["pid_file"] = f"{work}/homeserver.pid"
for k in ("registration_shared_secret_path", "macaroon_secret_key_path", "form_secret_path"):
    s[k] = s[k].replace("/var/lib/appliance", f"{work}/state")
json.dump(s, open(f"{work}/homeserver.yaml", "w"), indent=2)
EOF

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }'; }
python="$PWD/$venv/bin/python"
[ "${venv#/}" != "$venv" ] && python="$venv/bin/python"
(cd "$work" && exec "$python" -m synapse.app.homeserver -c "$work/homeserver.yaml" >"$work/synapse.log" 2>&1) &
synapse_pid=$!
start=$EPOCHREALTIME
until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
  "$url/_matrix/client/versions" 2>/dev/null; do
  kill -0 "$synapse_pid" 2>/dev/null || { tail -20 "$work/synapse.log" >&2; exit 1; }
  sleep 0.05
done
printf 'synapse ready after %.2f s (not counted)\n' "$(elapsed "$start")"

run() {
  local t0=$EPOCHREALTIME
  "$bin" bootstrap --plan "$plan" --state-dir "$work/state" --homeserver "$url" >"$work/last.out"
  elapsed "$t0"
}
printf 'fresh bootstrap: %.3f s (%s)\n' "$(run)" "$(grep 'request(s)' "$work/last.out")"
for i in 1 2 3 4 5; do
  printf 'rerun %d:         %.3f s (%s)\n' "$i" "$(run)" "$(grep 'request(s)' "$work/last.out")"
done
