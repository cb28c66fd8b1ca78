# The hosts of generated/default.nix as NixOS configurations, and the
# images built from them. Which host is which kind of machine is decided
# by the spec (`target`); this file only maps targets to nixpkgs' profiles.
{
  lib,
  generated,
  nixosSystem,
  appliance,
}:
let
  targets = {
    gce = ./targets/gce.nix;
    rpi4 = ./targets/rpi4.nix;
    nixos = ./targets/nixos.nix;
  };

  # An existing NixOS host (target `nixos`) brings its own hardware
  # configuration: hardware/<host>.nix beside flake.nix, copied from the
  # host's /etc/nixos/hardware-configuration.nix.
  hardwareOf = name: ../hardware + "/${name}.nix";

  configurations = lib.mapAttrs (
    name: host:
    nixosSystem {
      modules = [
        appliance
        targets.${host.target}
        {
          nixpkgs.hostPlatform = host.system;
          appliance.enable = true;
          appliance.host = name;
        }
      ]
      ++ lib.optional (host.target == "nixos" && builtins.pathExists (hardwareOf name)) (hardwareOf name);
    }
  ) generated.hosts;

  hostsOf = target: lib.attrNames (lib.filterAttrs (_: host: host.target == target) generated.hosts);

  # `<output>-<host>` for every host of a target, and `<output>` alone when
  # the spec has exactly one such host (the usual case).
  imagesOf =
    target: output: build:
    let
      names = hostsOf target;
    in
    lib.listToAttrs (map (name: lib.nameValuePair "${output}-${name}" (build configurations.${name})) names)
    // lib.optionalAttrs (lib.length names == 1) { ${output} = build configurations.${lib.head names}; };

  gceImages = imagesOf "gce" "gce-image" (c: c.config.system.build.googleComputeImage);
  # The SD image is an aarch64-linux derivation. It is also exported for
  # x86_64-linux so `nix build .#rpi4` works there: the builder then needs
  # `boot.binfmt.emulatedSystems = [ "aarch64-linux" ]` (or a remote
  # aarch64 builder); see README.
  rpi4Images = imagesOf "rpi4" "rpi4" (c: c.config.system.build.sdImage);
in
{
  inherit configurations;

  images = {
    x86_64-linux = gceImages // rpi4Images;
    aarch64-linux = rpi4Images;
  };

  # The VM test boots the Matrix host: it has every moving part.
  testHost = generated.matrixHost or null;
}
