# Ollama from nixpkgs, CPU build, for inference hosts without NVIDIA GPUs.
# It serves the spec's models from a named volume as a non-root user; the
# tag is Ollama's major.minor version.
{ pkgs, build }:
args:
build (
  args
  // {
    name = "agent-appliance/ollama";
    versioned = pkgs.ollama;
    match = "minor";
  }
)
