# Entry point of the OpenClaw image (after tini): removes the ownership
# records of processes of an earlier container from the state volume, then
# runs the gateway.
# OpenClaw tells a live owner of its state from a dead one by PID and start
# time: the gateway's lock files and the agent database leases in its
# state database. A container is the only OpenClaw on its volume, but after
# a kill or `docker rm -f` the records stay, and in the new container's
# fresh PID namespace the gateway is PID 2 again; under gVisor a process's
# start time counts from the sandbox's boot, so the dead owner's can match
# the new gateway's exactly (37 clock ticks, twice in a row, in the
# rehearsal). OpenClaw then refuses to start, exit 78: "Agent main database
# is still open in process 2", "Another gateway (pid 2) already owns this
# state directory". Nothing in a new container owns anything yet, so every
# such record is stale:
# - the gateway lock directory holds only locks (OpenClaw's own backup
#   leaves it out); OpenClaw makes it again;
# - a lease row is deleted as OpenClaw deletes a stale one; the integrity
#   record was marked unclean when the lease was taken, so OpenClaw still
#   checks the database as after any crash.
# Used by nix/packages/openclaw-start.nix and by the rehearsal's image.
state_dir="${OPENCLAW_STATE_DIR:-$HOME/.openclaw}"
rm -rf "$state_dir/tmp/openclaw-$(id -u)"
state="$state_dir/state/openclaw.sqlite"
release=$(
  cat <<'JS'
const { DatabaseSync } = require("node:sqlite");
const db = new DatabaseSync(process.argv[1]);
try {
  db.exec("PRAGMA busy_timeout = 5000");
  const leases = db
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'agent_database_leases'")
    .get();
  if (leases) {
    const { changes } = db.prepare("DELETE FROM agent_database_leases").run();
    if (changes > 0) {
      console.error(`appliance-openclaw-start: released ${changes} agent database lease(s) left by an earlier container`);
    }
  }
} finally {
  db.close();
}
JS
)
# A database that cannot be opened here is left to OpenClaw, whose own
# error says more.
if [ -f "$state" ] && ! node --no-warnings -e "$release" "$state"; then
  echo "appliance-openclaw-start: could not release the leases in $state; starting the gateway anyway" >&2
fi
exec openclaw gateway run "$@"
