# NixOS VM test: boot the Matrix host's configuration (the flake's module
# with the generated host) with every agent swapped for a tiny busybox image
# of the same name and tag, then check what the appliance promises at
# boot: the gVisor runtimes are registered with Docker, Synapse answers,
# the bootstrap finished and every sandbox runs under runsc.
{
  pkgs,
  lib,
  generated,
  host,
  appliance,
}:
let
  hostDir = ../../generated/hosts + "/${host}";
  sandboxes = generated.hosts.${host}.sandboxes;
  runtimes = lib.attrNames (lib.importJSON (hostDir + "/docker-daemon.json")).runtimes;
  synapsePort = (lib.head (lib.importJSON (hostDir + "/synapse.json")).listeners).port;

  # Same name and tag as the real image, so the generated unit loads and
  # runs it; it only sleeps.
  tinyImage =
    image:
    let
      parts = builtins.match "(.*):([^:/]+)" image;
    in
    pkgs.dockerTools.streamLayeredImage {
      name = lib.elemAt parts 0;
      tag = lib.elemAt parts 1;
      contents = [ pkgs.busybox ];
      config.Entrypoint = [
        "sleep"
        "2147483647"
      ];
    };
in
pkgs.testers.runNixOSTest {
  name = "appliance-${host}-boots";
  globalTimeout = 20 * 60;
  # The node shares the test's nixpkgs (the flake's, with the overlay):
  # nixosModules.default sets neither `nixpkgs.config` nor overlays, and
  # the test needs no unfree package (no GPU).
  nodes.machine =
    { lib, pkgs, ... }:
    {
      imports = [ appliance ];
      appliance = {
        enable = true;
        inherit host;
      };

      virtualisation = {
        memorySize = 4096;
        diskSize = 8192;
        cores = 2;
      };

      # The test VM has no GPU and no network: no NVIDIA driver, CPU
      # inference without pulling models.
      services.xserver.videoDrivers = lib.mkForce [ ];
      hardware.nvidia-container-toolkit.enable = lib.mkForce false;
      services.ollama.package = lib.mkForce pkgs.ollama-cpu;
      services.ollama.loadModels = lib.mkForce [ ];

      virtualisation.oci-containers.containers = lib.mapAttrs (_name: image: {
        imageStream = lib.mkForce (tinyImage image);
        cmd = lib.mkForce [ ];
      }) sandboxes;
    };

  testScript = ''
    import json

    runtimes = json.loads('${builtins.toJSON runtimes}')
    sandboxes = json.loads('${builtins.toJSON (lib.attrNames sandboxes)}')

    machine.wait_for_unit("docker.service")
    registered = json.loads(machine.succeed("docker info --format '{{json .Runtimes}}'"))
    for runtime in runtimes:
        assert runtime in registered, f"runtime {runtime} not registered: {sorted(registered)}"
        assert registered[runtime]["path"].endswith("/bin/runsc"), registered[runtime]

    machine.wait_for_unit("matrix-synapse.service")
    machine.wait_until_succeeds("curl -sf http://127.0.0.1:${toString synapsePort}/_matrix/client/versions")
    # Registration is closed: only the bootstrap (shared secret) makes accounts.
    machine.succeed("curl -s -X POST -d '{}' http://127.0.0.1:${toString synapsePort}/_matrix/client/v3/register | grep -q M_FORBIDDEN")

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
  '';
}
