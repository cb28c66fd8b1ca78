# An existing NixOS host. Its disks and boot loader are its own: the flake
# imports hardware/<host>.nix when it exists. Hosts that have their own
# flake import `nixosModules.default` instead (docs/existing-host.md).
{ config, ... }:
{
  assertions = [
    {
      assertion = config.fileSystems ? "/";
      message = ''
        appliance host `${config.appliance.host}` is an existing NixOS host (target = "nixos"),
        but this configuration has no root file system. Either:
          1. copy the host's /etc/nixos/hardware-configuration.nix to
             hardware/${config.appliance.host}.nix beside flake.nix (and `git add` it), or
          2. import `nixosModules.default` from the host's own configuration and set
             `appliance.enable = true; appliance.host = "${config.appliance.host}";` (docs/existing-host.md).
      '';
    }
  ];
}
