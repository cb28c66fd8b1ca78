# NVIDIA on a GPU host (docs/sandboxes.md, docs/existing-host.md): the
# driver with NVIDIA's open kernel module, which gVisor's nvproxy needs,
# and, when a sandbox uses the GPU, the container toolkit's CDI specs. Rust
# decides whether a host has a GPU, which `nvidiaPackages` attribute it uses
# and whether a sandbox uses the GPU (src/generator/render/host.rs:
# NVIDIA_PACKAGE); the host's generated values
# (generated/hosts/<host>/options.json, read by nix/generated.nix) set these
# options, and this module maps them onto nixpkgs' `hardware.nvidia`. The
# driver versions the shipped runsc's nvproxy supports are the same on every
# host: pinned with gVisor in nix/sources.json, read here as the option's
# default.
#
# The driver is unfree: the flake's configurations allow the NVIDIA/CUDA
# packages only (nix/unfree.nix); this module leaves `nixpkgs.config` to
# whoever builds nixpkgs.
{
  config,
  lib,
  ...
}:
let
  cfg = config.appliance.nvidia;
  host = config.appliance.host;
in
{
  options.appliance.nvidia = {
    enable = lib.mkEnableOption ''
      NVIDIA's driver with the open kernel module (gVisor's nvproxy needs
      it), checked against nvproxy's supported versions'';

    package = lib.mkOption {
      type = lib.types.strMatching "[A-Za-z0-9_]+";
      example = "dc_590";
      description = ''
        The attribute of `config.boot.kernelPackages.nvidiaPackages` whose
        driver is the default `hardware.nvidia.package` (a host's own
        package wins; the assertion still checks its version).
      '';
    };

    supportedVersions = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      # Pinned with the gVisor release the overlay builds; `appliance
      # doctor` checks the same list (NVPROXY_DRIVERS, from build.rs).
      default = (lib.importJSON ../nix/sources.json).gvisor.nvproxyDrivers;
      defaultText = lib.literalExpression "(lib.importJSON ../nix/sources.json).gvisor.nvproxyDrivers";
      example = [ "590.48.01" ];
      description = ''
        The driver versions the shipped runsc's nvproxy supports: it needs
        an exact match, so any other version fails evaluation.
      '';
    };

    containerToolkit = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        A sandbox uses the GPU: nixpkgs' container toolkit writes the CDI
        specs Docker's `--device=nvidia.com/gpu=all` resolves.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    hardware.graphics.enable = true;
    services.xserver.videoDrivers = [ "nvidia" ];
    hardware.nvidia.open = true;
    # A default: a host's own driver package wins, and the assertion below
    # checks it is one nvproxy supports.
    hardware.nvidia.package = lib.mkDefault (
      config.boot.kernelPackages.nvidiaPackages.${cfg.package} or (throw
        "appliance host `${host}`: this nixpkgs has no `nvidiaPackages.${cfg.package}`; pick the attribute whose version is on gVisor nvproxy's list (NVIDIA_PACKAGE in src/generator/render/host.rs) and regenerate."
      )
    );
    hardware.nvidia.nvidiaPersistenced = lib.mkDefault true;
    # The data-center driver has no nvidia-settings (a desktop tool), and
    # the module would otherwise ask for it.
    hardware.nvidia.nvidiaSettings = lib.mkDefault false;
    hardware.nvidia-container-toolkit.enable = lib.mkIf cfg.containerToolkit true;

    assertions = [
      {
        # nvproxy matches the host driver version exactly; anything else
        # fails when a sandbox opens the GPU.
        assertion =
          !(lib.elem "nvidia" config.services.xserver.videoDrivers)
          || lib.elem config.hardware.nvidia.package.version cfg.supportedVersions;
        message = "appliance host `${host}`: NVIDIA driver ${config.hardware.nvidia.package.version} is not on gVisor nvproxy's supported list for the runsc we ship. Set `hardware.nvidia.package` to one of the listed versions, or, after checking `runsc nvproxy list-supported-drivers`, update the list in src/generator/render/host.rs and regenerate.";
      }
    ];
  };
}
