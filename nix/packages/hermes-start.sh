# Entry point of the Hermes image (after tini): clears the gateway's
# single-instance records from its state volume, then runs the gateway.
# A container is the only gateway on its volume, but after a kill or
# `docker rm -f` the records stay, and in the new container's fresh PID
# namespace the recorded PID (and even its start time) can belong to a
# live process again, so Hermes refused to start: "Another gateway
# instance is already running (PID 2)". Its token-scoped locks live on
# /tmp instead (HERMES_GATEWAY_LOCK_DIR, set by the sandbox).
# Used by nix/packages/hermes-start.nix and by the rehearsal's image.
rm -f "$HERMES_HOME/gateway.pid" "$HERMES_HOME/gateway_state.json"
exec hermes gateway run "$@"
