# The appliance's OCI images, one function per image. Each takes what the
# spec decides (tag, account, writable paths, entrypoint, environment,
# packages; generated/images/<name>.nix passes them from
# src/generator/model/image.rs) and fixes what the image is: its repository and the
# package whose release its tag names.
#
#   nix build .#images.<name>      # the image as the default spec builds it
#   $(nix build --print-out-paths .#images.openclaw) | docker image load
{ pkgs, lib }:
let
  build = import ./build.nix { inherit pkgs lib; };
in
{
  openclaw = import ./openclaw.nix { inherit pkgs build; };
  picoclaw = import ./picoclaw.nix { inherit pkgs build; };
  hermes = import ./hermes.nix { inherit pkgs build; };
  docker-in-gvisor = import ./docker-in-gvisor.nix { inherit pkgs build; };
  ollama = import ./ollama.nix { inherit pkgs build; };
  ollama-cuda = import ./ollama-cuda.nix { inherit pkgs build; };
  searxng = import ./searxng.nix { inherit pkgs build; };
  webextract = import ./webextract.nix { inherit pkgs build; };
}
