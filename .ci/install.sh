#!/usr/bin/env bash
# Installs every tool the test suite needs on a Debian 12 machine, as root.
# Idempotent. Called by scripts/test.sh (the README's test command), so a
# newcomer's run skips nothing; on a machine without root or apt it does
# nothing and the tests that need a missing tool say so loudly (or fail
# with CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "note: not root on Debian: installing nothing; tests whose tools are missing will skip (or fail with CI=true)" >&2
  exit 0
fi

# bookworm-backports carries runsc 0.0~20240729 (systrap); bookworm's own
# runsc is a 2022 build. The mirror is the one this machine already uses.
debian_mirror() {
  local uri
  uri=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    grep -v -e security -e '#' | head -n1 | awk '{print ($1 == "deb") ? $2 : $2}')
  [ -n "$uri" ] || { echo "error: no Debian mirror found in /etc/apt/sources*" >&2; exit 1; }
  printf '%s\n' "$uri"
}
MIRROR=$(debian_mirror)
export APPLIANCE_DEBIAN_MIRROR="$MIRROR"
backports=/etc/apt/sources.list.d/appliance-backports.sources
if [ ! -f "$backports" ]; then
  cat > "$backports" <<SRC
Types: deb
URIs: $MIRROR
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  rm -f /var/lib/apt/periodic/appliance-updated
fi
stamp=/var/lib/apt/periodic/appliance-updated
if [ ! -f "$stamp" ]; then
  apt-get update -qq
  mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi

export DEBIAN_FRONTEND=noninteractive
# searx: Debian's SearXNG predecessor (same JSON API), which stands in for
# nixpkgs' SearXNG in tests/crawler.rs (SearXNG is not on PyPI).
# squid-openssl: squid built with OpenSSL, ssl-bump and its certificate
# generator (security_file_certgen), as nixpkgs builds it; it replaces
# Debian's GnuTLS `squid`, which has neither (the egress proxy adds the
# agents' credentials, tests/egress.rs).
apt-get install -y -qq --no-install-recommends \
  nix-bin docker.io busybox-static iproute2 python3-venv gcc libc6-dev \
  debootstrap dnsmasq-base nftables squid-openssl searx curl openssl patch >/dev/null
# PostgreSQL, which Synapse runs on in the tests: tests/support/synapse.rs starts a
# cluster of its own from /usr/lib/postgresql/*/bin, socket only. The
# `main` cluster Debian's package makes is never used by the tests.
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
apt-get install -y -qq --no-install-recommends -t bookworm-backports runsc >/dev/null
# WireGuard in userspace for the pairing test (tests/pairing.rs): no kernel module needed.
apt-get install -y -qq --no-install-recommends wireguard-go wireguard-tools >/dev/null
# qemu-user-static runs the Pi's arm64 PicoClaw (tests/agents.rs).
apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
# restic, with a local repository of its own, backs up and restores in
# tests/backup.rs (the appliance's backups use nixpkgs' restic module).
apt-get install -y -qq --no-install-recommends restic >/dev/null
# Graphviz's `dot` reads `appliance explain --format dot` (tests/cli.rs).
apt-get install -y -qq --no-install-recommends graphviz >/dev/null

# A real Synapse for the bootstrap tests (tests/support/synapse.rs finds it here),
# with psycopg2 for PostgreSQL: the binary wheel, as Synapse's `postgres`
# extra would build psycopg2 from source against libpq's headers.
if [ ! -x .ci/venv/bin/python ] || ! .ci/venv/bin/python -c 'import synapse, psycopg2' 2>/dev/null; then
  python3 -m venv .ci/venv
  .ci/venv/bin/pip install -q matrix-synapse==1.163.2 psycopg2-binary==2.9.13
fi

# trafilatura for the appliance's own page extraction service
# (nix/packages/webextract.py), which tests/crawler.rs and the rehearsal run
# from PyPI: nixpkgs' build cannot run here.
if [ ! -x .ci/webextract-venv/bin/python ] ||
   [ "$(.ci/webextract-venv/bin/python -c 'import importlib.metadata as m; print(m.version("trafilatura"))' 2>/dev/null)" != 2.3.1 ]; then
  rm -rf .ci/webextract-venv
  python3 -m venv .ci/webextract-venv
  # justext imports lxml.html.clean, which lxml 6 ships separately.
  .ci/webextract-venv/bin/pip install -q --disable-pip-version-check trafilatura==2.3.1 lxml_html_clean==0.4.6
fi

# The real agents the acceptance tests feed our configs to (idempotent).
bash .ci/agents.sh

# runsc and PicoClaw at the versions the images ship, built from the Go
# module proxy into .ci/go/ (cached per version).
bash .ci/gobuild.sh
