#!/bin/sh
# Pulls models into Ollama's sandbox through its API, one at a time:
# Ollama itself downloads (through the egress proxy when the sandbox has
# one). A model that fails is named on stderr (the unit's journal) and the
# others are still pulled; the script fails if any did, so
# appliance-ready.target is not reached.
# Usage: pull-models.sh URL MODEL...; the unit appliance-models
# (modules/models.nix) runs it with `appliance.models.url` and `.names`.
# Model names are checked by `appliance` to be [A-Za-z0-9._:/-], so they
# need no quoting in JSON.
set -u
url="$1"
shift
tries=0
until curl -fsS "$url/api/version" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 120 ]; then
    echo "appliance: Ollama at $url did not answer in 120 s; no model pulled" >&2
    exit 1
  fi
  sleep 1
done
failed=""
for model in "$@"; do
  echo "appliance: pulling model $model"
  body="{\"model\": \"$model\", \"stream\": false}"
  if out=$(curl -sS --fail-with-body -X POST -H 'Content-Type: application/json' \
      -d "$body" "$url/api/pull"); then
    echo "appliance: model $model is ready"
  else
    echo "appliance: model $model failed to pull: $out" >&2
    failed="$failed $model"
  fi
done
if [ -n "$failed" ]; then
  echo "appliance: models not pulled:$failed" >&2
  exit 1
fi
