# A stand-in for the agents' processes in the upgrade VM test
# (nix/checks/upgrade.nix): the sandboxes there are busybox sleepers that
# answer nobody, so this answers, as each agent's own account, every
# mention of that agent by an admin while the agent's container runs, as
# tests/upgrade.rs's stand-in thread does. Named a stand-in everywhere:
# it proves the upgrade's gate and rollback, not the agents.
#
# Usage: python3 upgrade-standin-agent.py HOMESERVER STATE_DIR ADMIN AGENT...
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request

homeserver, state_dir, admin, agents = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]


def call(method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(homeserver + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def running(agent):
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", agent], capture_output=True, text=True
    )
    return out.stdout.strip() == "true"


tokens = {}
for agent in agents:
    with open(f"{state_dir}/secrets/{agent}/matrix-token") as f:
        tokens[agent] = f.read().strip()
user_ids = {agent: call("GET", "/_matrix/client/v3/account/whoami", token)["user_id"] for agent, token in tokens.items()}
since = {agent: None for agent in agents}
sent = 0
while True:
    for agent, token in tokens.items():
        # Join what the bootstrap invited the agent to, as the agents do.
        path = "/_matrix/client/v3/sync?timeout=500"
        if since[agent]:
            path += "&since=" + urllib.parse.quote(since[agent])
        try:
            batch = call("GET", path, token)
        except Exception as error:  # Synapse restarting during a rollback
            print(f"{agent}: {error}", flush=True)
            time.sleep(1)
            continue
        for room in batch.get("rooms", {}).get("invite", {}):
            call("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room)}", token, {})
        first = since[agent] is None
        since[agent] = batch["next_batch"]
        if first:
            continue
        for room, joined in batch.get("rooms", {}).get("join", {}).items():
            for event in joined.get("timeline", {}).get("events", []):
                mentioned = user_ids[agent] in event.get("content", {}).get("m.mentions", {}).get("user_ids", [])
                if event.get("sender") == admin and mentioned and running(agent):
                    sent += 1
                    txn = f"standin-{agent}-{sent}-{int(time.time() * 1000)}"
                    call(
                        "PUT",
                        f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/send/m.room.message/{txn}",
                        token,
                        {"msgtype": "m.text", "body": "ok"},
                    )
                    print(f"{agent} answered in {room}", flush=True)
