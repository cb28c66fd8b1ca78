{
  description = "agent-appliance: one spec to a hardened machine running AI agents in gVisor sandboxes";

  # One input. The Raspberry Pi 4 boots from nixpkgs' generic aarch64 SD
  # image (U-Boot + extlinux + mainline kernel), so nixos-hardware is not
  # needed; see docs/flake.md.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = lib.genAttrs systems;

      # What `appliance generate` wrote (generated/appliance.json and each
      # host's options.json), loaded: every host with its target, system,
      # option values and NixOS module.
      generated = import ./nix/generated.nix ./generated;

      hosts = import ./nix/hosts.nix {
        inherit lib generated;
        nixosSystem = lib.nixosSystem;
        appliance = self.nixosModules.default;
        overlay = self.overlays.default;
      };

      # Instantiate nixpkgs only once for each system (packages, checks,
      # shells, `images`). NixOS configurations instantiate their own
      # (nix/hosts.nix). Both allow the unfree NVIDIA/CUDA packages only:
      # without that, `nix build .#images.ollama-cuda` stops at CUDA's licence.
      pkgsFor = forAllSystems (
        system:
        import nixpkgs {
          inherit system;
          overlays = [ self.overlays.default ];
          config = hosts.nixpkgsConfigFor system;
        }
      );
    in
    {
      overlays.default = import ./nix/overlay.nix;

      # `_file` names the module in the module system's errors and
      # `nixos-option` (a module made by a function has no file otherwise).
      nixosModules.default = {
        _file = "${toString ./flake.nix}#nixosModules.default";
        imports = [ (import ./modules/appliance.nix { inherit generated; }) ];
      };

      nixosConfigurations = hosts.configurations;

      # Image outputs are attributes of the configurations: evaluating the
      # flake does not build them, `nix build .#gce-image` does.
      packages = forAllSystems (
        system:
        let
          pkgs = pkgsFor.${system};
        in
        {
          appliance = pkgs.agent-appliance;
          default = pkgs.agent-appliance;
        }
        // hosts.images.${system} or { }
      );

      # The agent images as the spec builds them, for the systems its hosts
      # run them on: `nix build .#images.<name>` (images/).
      legacyPackages = forAllSystems (
        system:
        {
          images = hosts.imagesFor system pkgsFor.${system};
        }
        # `nix build .#rpi4` on x86_64 finds this after packages: the SD
        # image is an aarch64 derivation, so say where it is.
        // lib.optionalAttrs (system == "x86_64-linux" && hosts.images.aarch64-linux ? rpi4) {
          rpi4 = throw ''
            The Raspberry Pi image is an aarch64-linux derivation. On this x86_64 machine build
              nix build .#packages.aarch64-linux.rpi4   (with binfmt emulation or an aarch64 builder), or
              nix build .#rpi4-cross                     (cross-compiled; nothing from the binary cache).
            See docs/building.md.
          '';
        }
      );

      checks = forAllSystems (
        system:
        let
          pkgs = pkgsFor.${system};
        in
        {
          generated-up-to-date = import ./nix/checks/generated.nix { inherit pkgs; };
        }
        # The VM tests run on the system of the host they boot: the cheap
        # boot check (sleepers for images) and the rehearsal's scenario on
        # the real images.
        // lib.optionalAttrs (hosts.testHost != null && generated.hosts.${hosts.testHost}.system == system) (
          let
            vmTest =
              file:
              import file {
                inherit pkgs lib generated;
                host = hosts.testHost;
                appliance = self.nixosModules.default;
              };
          in
          {
            hub-boots = vmTest ./nix/checks/hub.nix;
            hub-scenario = vmTest ./nix/checks/hub-scenario.nix;
            hub-upgrade = vmTest ./nix/checks/upgrade.nix;
          }
        )
      );

      formatter = forAllSystems (system: pkgsFor.${system}.nixfmt);

      devShells = forAllSystems (system: {
        default = import ./nix/shell.nix { pkgs = pkgsFor.${system}; };
      });
    };
}
