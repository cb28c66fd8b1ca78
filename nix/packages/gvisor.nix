# gVisor's runsc and containerd shim. Raspberry Pi kernels use a 39-bit
# address space, which runsc supports on arm64 only from release-20260316.0
# (google/gvisor#12694). When the pinned nixpkgs ships an older gVisor, the
# release pinned in nix/sources.json is built instead, with the same recipe.
{
  lib,
  gvisor,
  buildGoModule,
  fetchFromGitHub,
  pin,
  source,
}:
if lib.versionAtLeast gvisor.version source.minimum then
  gvisor
else
  let
    pinned = {
      inherit (source) version;
      # gVisor's synthetic `go` branch builds without Bazel; its commits
      # titled "Merge release-<version> (automated)" are the releases.
      src = fetchFromGitHub {
        owner = "google";
        repo = "gvisor";
        rev = pin "gvisor" source "rev";
        hash = pin "gvisor" source "hash";
      };
      vendorHash = pin "gvisor" source "vendorHash";
    };
  in
  gvisor.override {
    # nixpkgs' recipe, with the pinned release: works whether the recipe
    # passes buildGoModule an attribute set or a `finalAttrs` function.
    buildGoModule =
      args:
      if builtins.isFunction args then
        buildGoModule (finalAttrs: args finalAttrs // pinned)
      else
        buildGoModule (args // pinned);
  }
