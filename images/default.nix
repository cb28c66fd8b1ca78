# The appliance's OCI images, one function per image. Each takes what the
# spec decides (tag, account, writable paths, entrypoint, environment,
# packages) and fixes what the image is: its repository and the package
# whose release its tag names.
#
# `appliance generate` writes those decisions as data,
# generated/images/<name>.json (from src/generator/model/image.rs); `fromGenerated`
# maps one such file onto its builder, once for every host and example.
#
#   nix build .#images.<name>      # the image as the default spec builds it
#   $(nix build --print-out-paths .#images.openclaw) | docker image load
{ pkgs, lib }:
let
  build = import ./build.nix { inherit pkgs lib; };

  builders = {
    openclaw = import ./openclaw.nix { inherit pkgs build; };
    picoclaw = import ./picoclaw.nix { inherit pkgs build; };
    hermes = import ./hermes.nix { inherit pkgs build; };
    docker-in-gvisor = import ./docker-in-gvisor.nix { inherit pkgs build; };
    ollama = import ./ollama.nix { inherit pkgs build; };
    ollama-cuda = import ./ollama-cuda.nix { inherit pkgs build; };
    searxng = import ./searxng.nix { inherit pkgs build; };
    webextract = import ./webextract.nix { inherit pkgs build; };
  };

  # A generated image description (generated/images/<name>.json): which
  # builder (`image`), what it is (`purpose`, for its reader) and the
  # builder's arguments, the packages by their nixpkgs attribute names
  # (with the flake's overlay). Packages are looked up lazily: reading an
  # image's account or entry point builds nothing. `bundled_plugins` is the
  # package's, not the builder's: nix/overlay.nix builds OpenClaw with it.
  argsOf =
    file:
    let
      description = builtins.fromJSON (builtins.readFile file);
    in
    removeAttrs description [
      "image"
      "purpose"
      "bundled_plugins"
    ]
    // {
      packages = map (name: builtins.getAttr name pkgs) description.packages;
    };
in
builders
// {
  inherit argsOf build;
  # The image a generated description builds.
  fromGenerated = file: builders.${(builtins.fromJSON (builtins.readFile file)).image} (argsOf file);
}
