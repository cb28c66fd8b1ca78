# Entry point of the OpenClaw image (after tini): removes the ownership
# records of processes of an earlier container from the state volume, then
# runs the gateway.
# OpenClaw tells a live owner of its state from a dead one by PID and start
# time: the gateway's lock files, and in its state database the agent
# database leases and the state leases held by a process (the gateway
# owner's). A container is the only OpenClaw on its volume, but after a kill
# or `docker rm -f` the records stay, and in the new container's fresh PID
# namespace the gateway is PID 2 again; under gVisor a process's start time
# counts from the sandbox's boot, so the dead owner's can match the new
# gateway's exactly (26, 31, 37 or 38 clock ticks in the rehearsal, the
# same for a killed gateway and its successor more than once). OpenClaw then
# refuses to start: "Agent main database is still open in process 2",
# "Another gateway (pid 2) already owns this state directory", "Another
# Gateway owner lease is still active for this state directory". Nothing in
# a new container owns anything yet, so every such record is stale:
# - the gateway lock directory holds only locks (OpenClaw's own backup
#   leaves it out); OpenClaw makes it again;
# - a state lease held by a process of this host (the container's fixed
#   hostname) is released, as OpenClaw releases a dead owner's; leases
#   without a process owner stay;
# - an agent database lease is deleted, as OpenClaw deletes a stale one;
#   its integrity record was marked unclean when the lease was taken, so
#   OpenClaw still checks the database as after any crash.
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
  // State leases held by a process of this host (the gateway owner's
  // among them); leases without a process owner are left alone.
  const stateLeases = db
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'state_leases'")
    .get();
  if (stateLeases) {
    const host = require("node:os").hostname();
    const drop = db.prepare("DELETE FROM state_leases WHERE scope = ? AND lease_key = ?");
    let released = 0;
    for (const row of db.prepare("SELECT scope, lease_key, payload_json FROM state_leases").all()) {
      let owner;
      try {
        owner = JSON.parse(row.payload_json ?? "null")?.owner;
      } catch {
        continue;
      }
      if (owner && owner.host === host && Number.isInteger(owner.pid)) {
        released += drop.run(row.scope, row.lease_key).changes;
      }
    }
    if (released > 0) {
      console.error(`appliance-openclaw-start: released ${released} state lease(s) left by an earlier container`);
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
