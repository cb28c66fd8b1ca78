#!/usr/bin/env bash
# The rehearsal's benchmark (issue 10, must have 6): the hub of the
# rehearsal (docs/rehearsal.md), its cold start to every agent answering,
# then per agent the same container (same image, same generated options)
# under its generated gVisor runtime and under runc, alternating in one run:
# start to ready, mention-to-reply round trips, memory. Prints Markdown
# tables for docs/benchmarks.md; the raw numbers stay in the JSON file.
#
# usage: sudo scripts/bench-rehearsal.sh [ROUNDS [REPLIES]]
#   ROUNDS   starts per runtime and agent (default 4; 0: none)
#   REPLIES  round trips after each start (default 5; ROUNDS x REPLIES per runtime)
#   BENCH_AGENTS=casper,melchior,balthasar  which agents (default all three)
#   BENCH_VARIANTS='label:--flag=v;..' extra runsc flag sets, run as more runtimes
#   BENCH_JSON=path                   where the raw results go
#   BENCH_START=waves|one-by-one  how the sandboxes start (the rehearsal: one by one)
#   BENCH_APPROVE=1h|0  the admin's standing approval of casper's code execution cards (0: nobody approves)
#   BENCH_RESTARTS=N  after the cold start, the agents restarted together N times under gVisor and N under
#                     runc, alternating (CPU seconds per agent, the machine's busy share);
#                     BENCH_PIN=1 adds N under gVisor with each agent pinned to one CPU
#   BENCH_LOAD=1|only  the load rounds (issue 25, item 5; benches/rehearsal/load.rs) after the
#                      cold start, before (1) or instead of (only) the per-agent alternation;
#                      the bench's spec adds a second human (benches/rehearsal/spec.rs):
#     BENCH_LOAD_MENTIONS=100  mentions per human   BENCH_LOAD_SPREAD_S=60  sent within
#     BENCH_LOAD_STRANGER=20   mentions from an account outside the spec (to be ignored)
#     BENCH_LOAD_LOGS=dir      keep each agent's, Synapse's and the stand-in's log of each round there
#     BENCH_LOAD_WAIT_S=300    wait for replies     BENCH_LOAD_KILL=melchior|none  killed mid-round
#     BENCH_LOAD_LIFT=0        keep Synapse's default message rate limit for the humans
#   BENCH_PROFILE=dir  profile every start of the per-agent rounds from inside the sandbox
#                      (benches/rehearsal/profile.rs): OpenClaw with Node's --cpu-prof, Hermes with
#                      benches/rehearsal/pyprof, the sentry with `runsc debug --profile-cpu` under a
#                      variant with --profile (BENCH_VARIANTS='prof:--profile'); then
#                      scripts/profile-report.py DIR; BENCH_PROFILE_IN=Hermes,OpenClaw which kinds get a
#                      profiler inside the sandbox (Node's costs OpenClaw's start under gVisor dearly)
# Needs what the rehearsal needs (.ci/install.sh); about 25 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_ROUNDS="${1:-${BENCH_ROUNDS:-4}}"
export BENCH_REPLIES="${2:-${BENCH_REPLIES:-5}}"
export BENCH_JSON="${BENCH_JSON:-$PWD/target/bench-rehearsal-$(date -u +%Y%m%dT%H%M%S).json}"
mkdir -p "$(dirname "$BENCH_JSON")"
cargo bench --locked --bench rehearsal
python3 scripts/bench-rehearsal-table.py "$BENCH_JSON"
