# Ollama from nixpkgs built with CUDA, for NVIDIA hosts. The driver's
# libraries and device nodes come from the host's CDI spec at container
# start (hardware.nvidia-container-toolkit); gVisor's nvproxy forwards the
# allowed ioctls. The tag is Ollama's major.minor version.
{ pkgs, build }:
args:
build (
  args
  // {
    name = "agent-appliance/ollama-cuda";
    versioned = pkgs.ollama-cuda;
    match = "minor";
  }
)
