# The unfree packages a GPU host needs, and nothing else: NVIDIA's driver and
# its tools, and the CUDA libraries Ollama's CUDA build links. Used by the
# flake's own configurations as `nixpkgs.config.allowUnfreePredicate`; a
# consumer importing `nixosModules.default` sets its own (docs/existing-host.md).
lib: pkg:
let
  name = lib.getName pkg;
in
lib.any (prefix: lib.hasPrefix prefix name) [
  "nvidia"
  "cuda"
  "libcu"
  "libnv"
  "libnpp"
  "cudnn"
]
