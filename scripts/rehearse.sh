#!/usr/bin/env bash
# The rehearsal: the hub of the default spec under real gVisor, where the
# agents answer in the room (docs/rehearsal.md). Runs tests/rehearsal alone,
# as root, with its output shown. `.ci/run` runs the same test with the rest
# of the suite.
#
#   sudo scripts/rehearse.sh
#
# Images are cached in $APPLIANCE_REHEARSAL_CACHE (default
# /var/cache/appliance-rehearsal): the first run builds them (debootstrap,
# apt, npm, pip; about 10 minutes), later runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "error: the rehearsal starts dockerd in a network namespace of its own; run it as root" >&2
  exit 1
fi
bash .ci/install.sh
# The release the images ship, as scripts/test.sh runs it (.ci/gobuild.sh).
if [ -x .ci/go/bin/runsc ]; then
  export PATH="$PWD/.ci/go/bin:$PATH"
fi
exec cargo test --locked --test rehearsal -- --nocapture
