#!/usr/bin/env bash
# The whole test suite, as the README gives it: installs the tools the tests
# need (as root on Debian: .ci/install.sh, idempotent), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install.sh
cargo test --locked --all-targets
