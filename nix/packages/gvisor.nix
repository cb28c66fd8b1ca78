# gVisor's runsc and containerd shim. Raspberry Pi kernels use a 39-bit
# address space, which runsc supports on arm64 only from release-20260316.0
# (google/gvisor#12694). nixpkgs' own gvisor is used when it is at least
# that; otherwise its recipe builds the release pinned in nix/sources.json.
# Either way runsc is linked with its release name, as .ci/gobuild.sh does:
# nixpkgs' recipe passes only `-s -w`, so its `runsc --version` says
# `VERSION_MISSING`, and `appliance doctor` could not tell the release.
{
  lib,
  gvisor,
  buildGoModule,
  fetchFromGitHub,
  source,
}:
let
  # What `runsc --version` prints: `release-<version>`, the name of the
  # release the `go`-branch commit merges (nixpkgs' `version` is its date).
  withRelease =
    package:
    package.overrideAttrs (old: {
      ldflags = (old.ldflags or [ ]) ++ [
        "-X gvisor.dev/gvisor/runsc/version.version=release-${old.version}"
      ];
    });
in
if lib.versionAtLeast gvisor.version source.minimum then
  withRelease gvisor
else
  let
    # release-20260406.0 as nixpkgs' recipe pinned it (source and module
    # hashes). That recipe tidies go.mod inside the module derivation, because
    # gVisor's published go.mod lists modules no built package imports and
    # `go mod vendor` rejects it; the vendor hash covers the tidied go.mod
    # and go.sum, carried in the vendor directory and restored before the
    # build. The same steps are repeated here so the hash holds whatever
    # the older recipe does.
    pinned = {
      inherit (source) version;
      # gVisor's synthetic `go` branch builds without Bazel; its commits
      # titled "Merge release-<version> (automated)" are the releases.
      src = fetchFromGitHub {
        owner = "google";
        repo = "gvisor";
        inherit (source) rev hash;
      };
      inherit (source) vendorHash;
      overrideModAttrs = old: {
        # The restore step below is for the main build only.
        preBuild = "";
        postPatch = (old.postPatch or "") + ''
          export GOCACHE=$TMPDIR/go-cache GOPATH=$TMPDIR/go
          go mod tidy
        '';
        postBuild = (old.postBuild or "") + ''
          cp go.mod go.sum vendor/
        '';
      };
      preBuild = ''
        chmod -R u+w vendor
        cp vendor/go.mod vendor/go.sum .
      '';
    };
  in
  withRelease (gvisor.override {
    # nixpkgs' recipe, with the pinned release: works whether the recipe
    # passes buildGoModule an attribute set or a `finalAttrs` function.
    buildGoModule =
      args:
      if builtins.isFunction args then
        buildGoModule (finalAttrs: args finalAttrs // pinned)
      else
        buildGoModule (args // pinned);
  })
