#!/usr/bin/env bash
# Container start-to-exit latency (`docker run --rm IMAGE true`) under a
# private dockerd with the default spec's generated runtimes: the strict
# runtime vs bare runsc (same binary, no flags but the `--network=none` this
# machine needs) vs runc, plus strict with a sandbox's full generated run
# options. Runs are interleaved; round 0 is a warm-up. Target (issue 3):
# strict / bare <= 1.10. Numbers go in docs/sandboxes.md.
#
# usage: sudo scripts/bench-sandbox.sh [RUNS]     (default 30; needs runsc,
#        dockerd, busybox, gcc: see .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_RUNS="${1:-30}"
cargo bench --locked --bench sandbox
