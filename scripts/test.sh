#!/usr/bin/env bash
# The whole test suite, as the README gives it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --all-targets
