#!/usr/bin/env bash
# The whole test suite, as the README gives it: installs the tools the tests
# need (as root on Debian: .ci/install.sh, idempotent), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install.sh
# The gVisor tests find `runsc` on PATH: the release the images ship, built
# by .ci/gobuild.sh, rather than Debian's older one in /usr/bin.
if [ -x .ci/go/bin/runsc ]; then
  export PATH="$PWD/.ci/go/bin:$PATH"
fi
cargo test --locked --all-targets
