# NixOS VM test, the cheap one: boot the Matrix host's configuration (the
# flake's module with the generated host, as hub-node.nix changes it for a
# VM) with every sandbox's image swapped for a sleeper (sleepers.nix),
# then check what the appliance promises at boot (hub-boot-checks.nix).
{
  pkgs,
  lib,
  generated,
  host,
  appliance,
}:
pkgs.testers.runNixOSTest {
  name = "appliance-${host}-boots";
  globalTimeout = 20 * 60;
  # The node shares the test's nixpkgs (the flake's, with the overlay):
  # nixosModules.default sets neither `nixpkgs.config` nor overlays, and
  # the test needs no unfree package (no GPU).
  nodes.machine.imports = [
    (import ./hub-node.nix { inherit appliance generated host; })
    (import ./sleepers.nix { inherit pkgs generated host; })
  ];

  testScript = import ./hub-boot-checks.nix { inherit lib generated host; };
}
