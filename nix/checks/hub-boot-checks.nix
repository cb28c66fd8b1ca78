# What the appliance promises at boot, as test-driver Python for a node
# called `machine` (both VM tests run it first): the gVisor runtimes are
# registered with Docker, Synapse answers with registration closed, the
# bootstrap finished with no group/other-readable secret, the admins' web
# client logs in, and every sandbox runs under a runsc runtime.
{
  lib,
  generated,
  host,
}:
let
  hostDir = ../../generated/hosts + "/${host}";
  sandboxes = lib.attrNames generated.hosts.${host}.sandboxes;
  runtimes = lib.attrNames (lib.importJSON (hostDir + "/docker-daemon.json")).runtimes;
  synapsePort = toString (lib.head (lib.importJSON (hostDir + "/synapse.json")).listeners).port;
in
''
  import json

  runtimes = json.loads('${builtins.toJSON runtimes}')
  sandboxes = json.loads('${builtins.toJSON sandboxes}')

  machine.wait_for_unit("docker.service")
  registered = json.loads(machine.succeed("docker info --format '{{json .Runtimes}}'"))
  for runtime in runtimes:
      assert runtime in registered, f"runtime {runtime} not registered: {sorted(registered)}"
      assert registered[runtime]["path"].endswith("/bin/runsc"), registered[runtime]

  machine.wait_for_unit("matrix-synapse.service")
  machine.wait_until_succeeds("curl -sf http://127.0.0.1:${synapsePort}/_matrix/client/versions")
  # Registration is closed: only the bootstrap (shared secret) makes accounts.
  machine.succeed("curl -s -X POST -d '{}' http://127.0.0.1:${synapsePort}/_matrix/client/v3/register | grep -q M_FORBIDDEN")

  machine.wait_for_unit("appliance-bootstrap.service")
  machine.succeed("test -z \"$(find /var/lib/appliance/secrets -type f -perm /077)\"")

  # The admins' web client: Cinny locked to this homeserver, and the
  # password `appliance admin password` prints logs in through its proxy.
  machine.wait_for_unit("nginx.service")
  cinny = json.loads(machine.succeed("curl -sf http://127.0.0.1:8080/config.json"))
  assert cinny["allowCustomHomeservers"] is False, cinny
  password = machine.succeed("appliance admin password gendo").strip()
  login = json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "gendo"}, "password": password})
  machine.succeed(f"curl -sf -d '{login}' http://127.0.0.1:8080/_matrix/client/v3/login | grep -q access_token")

  for name in sandboxes:
      machine.wait_for_unit(f"docker-{name}.service")
      runtime = machine.succeed(f"docker inspect --format '{{{{.HostConfig.Runtime}}}}' {name}").strip()
      assert runtime.startswith("runsc"), f"{name} runs under {runtime}"
''
