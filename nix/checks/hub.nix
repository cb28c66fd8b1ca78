# NixOS VM test, the cheap one: boot the Matrix host's configuration (the
# flake's module with the generated host, as hub-node.nix changes it for a
# VM) with every sandbox's image swapped for a tiny busybox image of the
# same name and tag, then check what the appliance promises at boot
# (hub-boot-checks.nix). It builds none of the agent images;
# hub-scenario.nix runs the real ones.
{
  pkgs,
  lib,
  generated,
  host,
  appliance,
}:
let
  sandboxes = generated.hosts.${host}.sandboxes;

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
    { lib, ... }:
    {
      imports = [
        appliance
        (import ./hub-node.nix { inherit generated host; })
      ];

      virtualisation = {
        memorySize = 4096;
        diskSize = 8192;
        cores = 2;
      };

      # Nothing to pull: the sleepers serve no models (the models unit
      # fails after its 120 s wait, which this test does not look at).
      services.ollama.loadModels = lib.mkForce [ ];

      virtualisation.oci-containers.containers = lib.mapAttrs (_name: image: {
        imageStream = lib.mkForce (tinyImage image);
        cmd = lib.mkForce [ ];
      }) sandboxes;
    };

  testScript = import ./hub-boot-checks.nix { inherit lib generated host; };
}
