# The Matrix host as the VM tests boot it (hub.nix, hub-scenario.nix,
# upgrade.nix): the flake's module (`appliance`) with the generated host,
# changed only where a test VM differs from the machine the spec describes. Each change says why; the
# rehearsal (docs/rehearsal.md) makes the same ones for the same reasons.
{
  appliance,
  generated,
  host,
}:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  hostDir = ../../generated/hosts + "/${host}";
  daemon = lib.importJSON (hostDir + "/docker-daemon.json");
  # The generated host's option values (nix/generated.nix), for the
  # sandboxes' `docker run` options as generated (`appliance.sandboxes`,
  # modules/sandboxes.nix): the test keeps every one of them but the two below.
  generatedSandboxes = generated.hosts.${host}.values.sandboxes;

  cores = config.virtualisation.cores;
  # Docker refuses `--cpus` above the machine's CPU count (Ollama's 8).
  clampCpus =
    option:
    let
      cpus = builtins.fromJSON (lib.removePrefix "--cpus=" option);
    in
    if lib.hasPrefix "--cpus=" option && cpus > cores then "--cpus=${toString cores}" else option;
  # No GPU and no CDI spec in the VM: the inference sandbox runs without
  # its GPU devices.
  isGpuDevice = lib.hasPrefix "--device=nvidia.com/gpu=";
in
{
  imports = [ appliance ];

  appliance = {
    enable = true;
    inherit host;
  };

  # The test VM has no GPU: no NVIDIA driver, no container toolkit, and
  # Ollama on the CPU if it runs on the host (`sandbox = "host"` specs).
  services.xserver.videoDrivers = lib.mkForce [ ];
  hardware.nvidia-container-toolkit.enable = lib.mkForce false;
  services.ollama.package = lib.mkForce pkgs.ollama-cpu;

  # gVisor's nvproxy needs the host's NVIDIA driver: every runtime keeps
  # its generated flags minus `--nvproxy*` (only `runsc-gpu` has them).
  virtualisation.docker.daemon.settings.runtimes = lib.mapAttrs (_name: runtime: {
    runtimeArgs = lib.mkForce (lib.filter (arg: !lib.hasPrefix "--nvproxy" arg) runtime.runtimeArgs);
  }) daemon.runtimes;

  appliance.sandboxes = lib.mapAttrs (_name: sandbox: {
    extraOptions = lib.mkForce (map clampCpus (lib.filter (option: !isGpuDevice option) sandbox.extraOptions));
  }) generatedSandboxes;
}
