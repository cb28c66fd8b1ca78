# The Matrix host's sandboxes as the cheap VM tests run them (hub.nix,
# upgrade.nix): every sandbox's image swapped for a tiny busybox image of
# the same name and tag that only sleeps, in a VM sized for that. They
# build none of the agent images; hub-scenario.nix runs the real ones.
{
  pkgs,
  generated,
  host,
}:
{ lib, ... }:
let
  sandboxes = generated.hosts.${host}.sandboxes;
  tinyImage = import ./tiny-image.nix pkgs;
in
{
  virtualisation = {
    memorySize = 4096;
    diskSize = 8192;
    cores = 2;
  };

  # Nothing to pull: the sleepers serve no models (the models unit
  # fails after its 120 s wait, which these tests do not look at).
  services.ollama.loadModels = lib.mkForce [ ];

  virtualisation.oci-containers.containers = lib.mapAttrs (_name: image: {
    imageStream = lib.mkForce (
      tinyImage image [
        "sleep"
        "2147483647"
      ]
    );
    cmd = lib.mkForce [ ];
  }) sandboxes;
}
