# PicoClaw is nixpkgs' own package (`pkgs.picoclaw`: its pinned source and
# Go module hashes, its frontend), with two changes. nixpkgs links it against
# libolm, which nixpkgs marks insecure (deprecated upstream, CVE-2024-45191..3;
# pkgs/by-name/ol/olm/package.nix), so the package does not evaluate without
# `permittedInsecurePackages`. PicoClaw's Go Matrix library builds a pure-Go
# Olm instead with the `goolm` tag, as PicoClaw's own release builds do; the
# module set is the same, so nixpkgs' `vendorHash` still holds. And a patch
# to its agent loop (nix/patches/README.md) that touches no go.mod or go.sum:
# the module set, so `vendorHash`, is the same again.
{
  lib,
  picoclaw,
  source,
}:
picoclaw.overrideAttrs (old: {
  buildInputs = lib.filter (input: lib.getName input != "olm") (old.buildInputs or [ ]);
  tags = (old.tags or [ ]) ++ [ "goolm" ];
  # Every queued follow-up turn's answer is sent, not only the last one's.
  # It adds a Go test (nix/patches/README.md); whether nixpkgs' check phase
  # runs it was not checked here (no nixpkgs on the machine).
  patches = (old.patches or [ ]) ++ [ ../patches/picoclaw-publish-every-answer.patch ];
  # Checked when the package is built, not when a configuration that might
  # replace it is evaluated: the image tag names this version.
  preBuild =
    lib.throwIfNot (old.version == source.version) ''
      agent-appliance: the image is tagged PicoClaw ${source.version} (nix/sources.json), but
      this nixpkgs has picoclaw ${old.version}. Update `picoclaw.version` in nix/sources.json and
      VERSION in src/generator/kinds/picoclaw/mod.rs to ${old.version} (and check its config schema,
      tests/agents.rs), then run `appliance generate`.
    '' (old.preBuild or "");
})
