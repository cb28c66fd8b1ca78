#!/usr/bin/env bash
# Builds the appliance's two Go programs at the versions its images ship,
# from the Go module proxy only (nothing from a git host), into .ci/go/
# (ignored by git; $APPLIANCE_GOBUILD_OUT instead, when set), one directory
# per module version; a finished build is kept and skipped. Versions, module
# paths and build tags are read from nix/sources.json (`goModule` of `gvisor`
# and `picoclaw`), the one place they are pinned. PicoClaw is patched as the
# Nix package is (nix/patches/picoclaw-*.patch); <patches> is a hash of them,
# so a change to them builds anew.
#   .ci/go/runsc-<version>/runsc               gVisor, CGO off as nixpkgs builds it
#   .ci/go/picoclaw-<version>-<patches>/picoclaw         PicoClaw
#   .ci/go/picoclaw-<version>-<patches>-arm64/picoclaw  PicoClaw for the Pi (linux/arm64):
#       `agents::picoclaw_arm64_loads_the_pi_configs` runs it under
#       qemu-aarch64-static. A cold cross build takes ~8-13 minutes of two
#       cores; PICOCLAW_ARM64=0 skips it (that test then fails under CI=true).
# The newest build is also linked as .ci/go/bin/runsc and .ci/go/bin/picoclaw:
# the stable paths the tests use (see tests/support/mod.rs `built_runsc`).
# Needs Go >= 1.25 (PicoClaw's go.mod); GOTOOLCHAIN=local, so no other Go is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null || { echo "error: no Go toolchain: .ci/gobuild.sh needs \`go\` (1.25 or later)" >&2; exit 1; }

# The machine's module proxy, without the `direct` fallback (a git host).
proxy=$(go env GOPROXY)
export GOPROXY=${proxy%,direct}
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

# `pin gvisor version` prints nix/sources.json's `gvisor.goModule.version`
# (scripts/pin joins lists with commas: Go's -tags syntax).
pin() {
  scripts/pin "$1" "goModule.$2"
}

out=${APPLIANCE_GOBUILD_OUT:-.ci/go}
mkdir -p "$out/bin"
# What an interrupted earlier build left in its temporary directory.
rm -rf "$out"/.runsc.* "$out"/.picoclaw.*

# `build_once NAME DIR LABEL COMMAND...`: unless DIR already holds NAME,
# runs COMMAND... TMP, which builds NAME into TMP, a temporary directory
# beside DIR, then renames TMP to DIR: an interrupted build leaves no
# half-filled version directory behind.
build_once() {
  local name=$1 dir=$2 label=$3 tmp start
  shift 3
  if [ -x "$dir/$name" ]; then
    echo "$name $label already in $dir"
    return
  fi
  start=$SECONDS
  tmp=$(mktemp -d "$out/.$name.XXXXXX")
  chmod 755 "$tmp"
  "$@" "$tmp"
  rm -rf "$dir" && mv "$tmp" "$dir"
  echo "$name $label built in $((SECONDS - start)) s"
}

# `go install pkg@version` builds with gVisor's own go.mod, as the `go`
# branch publishes it; -X sets what `runsc --version` prints.
go_install_runsc() {
  local module=$1 version=$2 describe=$3 tmp=$4
  GOBIN="$(realpath "$tmp")" nice -n 10 go install -trimpath \
    -ldflags "-s -w -X $module/runsc/version.version=$describe" \
    "$module/runsc@$version"
}

build_runsc() {
  local module version describe
  module=$(pin gvisor path)
  version=$(pin gvisor version)
  describe=$(pin gvisor describe)
  build_once runsc "$out/runsc-$version" "$describe" go_install_runsc "$module" "$version" "$describe"
  ln -sfn "../runsc-$version/runsc" "$out/bin/runsc"
  "$out/bin/runsc" --version | sed -n 1p
}

# PicoClaw's patches, as nix/packages/picoclaw.nix applies them (in order).
picoclaw_patches=(nix/patches/picoclaw-publish-every-answer.patch)

# The module cache is read-only; `go generate` copies workspace/ into the
# onboard command's embed directory, and the patches change it, so PicoClaw
# builds in a writable copy.
go_build_picoclaw() {
  local module=$1 version=$2 package=$3 tags=$4 arch=$5 tmp=$6 src patch
  src=$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp -r "$src" "$tmp/src"
  chmod -R u+w "$tmp/src"
  for patch in "${picoclaw_patches[@]}"; do
    patch --forward --batch --silent -p1 -d "$tmp/src" < "$patch"
  done
  (
    cd "$tmp/src"
    nice -n 10 go generate ./...
    GOARCH=${arch:-$(go env GOARCH)} nice -n 10 go build -trimpath -tags "$tags" \
      -ldflags "-s -w -X $module/pkg/config.Version=${version#v}" -o ../picoclaw "$package"
  )
  rm -rf "$tmp/src"
}

# `build_picoclaw` builds for this machine; `build_picoclaw arm64` for the Pi.
build_picoclaw() {
  local arch=${1:-} module version package tags patched suffix="" run=()
  module=$(pin picoclaw path)
  version=$(pin picoclaw version)
  package=$(pin picoclaw package)
  tags=$(pin picoclaw tags)
  patched=$version-$(cat "${picoclaw_patches[@]}" | sha256sum | cut -c1-12)
  if [ -n "$arch" ]; then
    suffix="-$arch"
    run=(qemu-aarch64-static)
  fi
  build_once picoclaw "$out/picoclaw-$patched$suffix" "$patched$suffix" \
    go_build_picoclaw "$module" "$version" "$package" "$tags" "$arch"
  ln -sfn "../picoclaw-$patched$suffix/picoclaw" "$out/bin/picoclaw$suffix"
  if [ -z "$arch" ] || command -v qemu-aarch64-static >/dev/null; then
    "${run[@]}" "$out/bin/picoclaw$suffix" --no-color version | grep -F picoclaw
  fi
}

build_runsc
build_picoclaw
if [ "${PICOCLAW_ARM64:-1}" != 0 ]; then
  build_picoclaw arm64
fi
