# The hosts of the generated tree (nix/generated.nix) as NixOS configurations, and the
# images built from them. Which host is which kind of machine is decided
# by the spec (`target`); this file only maps targets to profiles and
# gives the flake's own configurations what nixosModules.default leaves to
# its consumer: the overlay and the unfree NVIDIA/CUDA packages.
{
  lib,
  generated,
  nixosSystem,
  appliance,
  overlay,
}:
let
  # The NixOS release the flake's new machines (GCE, Pi) start with; the
  # library module (nixosModules.default) leaves `system.stateVersion` to
  # the machine.
  stateVersion = "26.05";

  targets = {
    gce = ./targets/gce.nix;
    rpi4 = ./targets/rpi4.nix;
    nixos = ./targets/nixos.nix;
  };

  # An existing NixOS host (target `nixos`) brings its own hardware
  # configuration: hardware/<host>.nix beside flake.nix, copied from the
  # host's /etc/nixos/hardware-configuration.nix.
  hardwareOf = name: ../hardware + "/${name}.nix";

  configurationOf =
    name: host: extraModules:
    nixosSystem {
      modules = [
        appliance
        targets.${host.target}
        {
          nixpkgs.hostPlatform = host.system;
          nixpkgs.overlays = [ overlay ];
          nixpkgs.config = {
            allowUnfreePredicate = import ./unfree.nix lib;
          }
          # CUDA device code for this host's GPU only (`cudaCapabilities`,
          # pkgs/top-level/config.nix in nixpkgs): Ollama's CUDA build for
          # every architecture takes longer than a CI runner has.
          // lib.optionalAttrs (host ? cudaCapabilities) { inherit (host) cudaCapabilities; };
          # The flake's own machines are new installs of this release; an
          # existing host (target `nixos`) keeps the state version it has.
          system.stateVersion = lib.mkIf (host.target != "nixos") (lib.mkDefault stateVersion);
          appliance.enable = true;
          appliance.host = name;
        }
      ]
      ++ lib.optional (host.target == "nixos" && builtins.pathExists (hardwareOf name)) (hardwareOf name)
      ++ extraModules;
    };

  configurations = lib.mapAttrs (name: host: configurationOf name host [ ]) generated.hosts;

  hostsOf = target: lib.attrNames (lib.filterAttrs (_: host: host.target == target) generated.hosts);

  # `<output>-<host>` for every host of a target, and `<output>` alone when
  # the spec has exactly one such host (the usual case).
  imagesOf =
    target: output: build:
    let
      names = hostsOf target;
    in
    lib.listToAttrs (map (name: lib.nameValuePair "${output}-${name}" (build name)) names)
    // lib.optionalAttrs (lib.length names == 1) { ${output} = build (lib.head names); };

  gceImages = imagesOf "gce" "gce-image" (name: configurations.${name}.config.system.build.googleComputeImage);
  # The SD image is an aarch64-linux derivation, built natively (or on an
  # x86_64 machine with `boot.binfmt.emulatedSystems = [ "aarch64-linux" ]`:
  # `nix build .#packages.aarch64-linux.rpi4`).
  rpi4Images = imagesOf "rpi4" "rpi4" (name: configurations.${name}.config.system.build.sdImage);
  # The same system cross-compiled on x86_64: a different derivation (not in
  # nixpkgs' binary cache, everything is built), hence its own name.
  rpi4CrossImages = imagesOf "rpi4" "rpi4-cross" (
    name:
    (configurationOf name generated.hosts.${name} [ { nixpkgs.buildPlatform = "x86_64-linux"; } ])
    .config.system.build.sdImage
  );

  # Every image the spec's hosts run, for the systems they run on, as
  # `legacyPackages.<system>.images.<name>` (`nix build .#images.<name>`).
  imagesFor =
    system: pkgs:
    let
      applianceImages = import ../images {
        inherit pkgs;
        inherit (pkgs) lib;
      };
    in
    lib.mapAttrs (_name: image: applianceImages.fromGenerated image.file) (
      lib.filterAttrs (_name: image: lib.elem system image.systems) generated.images
    );
  # nixpkgs for the images outside a configuration (`nix build
  # .#images.<name>`): the unfree NVIDIA/CUDA packages allowed, as in the
  # configurations, and CUDA built for the GPUs of this system's hosts.
  nixpkgsConfigFor =
    system:
    let
      capabilities = lib.unique (
        lib.concatMap (host: host.cudaCapabilities or [ ]) (
          lib.filter (host: host.system == system) (lib.attrValues generated.hosts)
        )
      );
    in
    {
      allowUnfreePredicate = import ./unfree.nix lib;
    }
    // lib.optionalAttrs (capabilities != [ ]) { cudaCapabilities = capabilities; };
in
{
  inherit configurations imagesFor nixpkgsConfigFor;

  images = {
    x86_64-linux = gceImages // rpi4CrossImages;
    aarch64-linux = rpi4Images;
  };

  # The VM test boots the Matrix host: it has every moving part.
  testHost = generated.matrixHost or null;
}
