#!/usr/bin/env bash
# Minimal reproducer for gVisor's own network stack (`--network=sandbox`,
# what every generated runtime uses) on this machine: a container under
# `runsc RUNSC run` in a network namespace made here, with a veth to a
# second namespace where busybox httpd serves a page; the container fetches
# it with busybox nc over the netstack. Nothing leaves the two namespaces;
# both are removed on exit. Needs root, iproute2, busybox (static) and
# python3.
#   scripts/netstack-repro.sh .ci/go/bin/runsc   # the shipped release
#   scripts/netstack-repro.sh /usr/bin/runsc     # Debian's 0.0~20240729
# Prints the container's routes and the HTTP response; exits with runsc's
# status (the container's, when it ran).
set -euo pipefail
runsc=$(realpath "${1:?usage: $0 RUNSC}")
ns=netstack-$$
peer=netstack-peer-$$
work=$(mktemp -d)
cleanup() {
  ip netns pids "$peer" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  ip netns del "$peer" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip netns add "$peer"
ip link add "ns$$" netns "$ns" type veth peer name "pe$$" netns "$peer"
ip -n "$ns" addr add 10.77.0.2/24 dev "ns$$"
ip -n "$ns" link set "ns$$" up
ip -n "$ns" link set lo up
ip -n "$peer" addr add 10.77.0.1/24 dev "pe$$"
ip -n "$peer" link set "pe$$" up
mkdir -p "$work/www"
echo hello-from-peer >"$work/www/index.html"
ip netns exec "$peer" busybox httpd -f -p 10.77.0.1:8080 -h "$work/www" &
sleep 0.3

# An OCI bundle: busybox only; the sandbox joins the namespace it is
# started in (the spec names the caller's network namespace).
mkdir -p "$work/bundle/rootfs/bin"
cp "$(command -v busybox)" "$work/bundle/rootfs/bin/busybox"
for applet in sh ip nc printf; do ln -s busybox "$work/bundle/rootfs/bin/$applet"; done
cd "$work/bundle"
"$runsc" spec -- /bin/sh -c \
  'ip route; printf "GET /index.html HTTP/1.0\r\n\r\n" | nc 10.77.0.1 8080'
python3 - <<'PY'
import json
config = json.load(open("config.json"))
config["process"]["terminal"] = False
spaces = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
config["linux"]["namespaces"] = spaces + [{"type": "network", "path": "/proc/self/ns/net"}]
json.dump(config, open("config.json", "w"))
PY
echo "runsc: $("$runsc" --version | head -1)"
# --ignore-cgroups: this VM has no cgroup v1 cpuset to configure; nothing
# about the network depends on it.
rc=0
ip netns exec "$ns" timeout 60 "$runsc" --root "$work/state" --network=sandbox \
  --platform=systrap --ignore-cgroups run "netstack-$$" </dev/null || rc=$?
echo "exit: $rc"
exit "$rc"
