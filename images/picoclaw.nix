# PicoClaw's gateway (nixpkgs' package without libolm, nix/packages/picoclaw.nix)
# with the gh CLI for its GitHub skill and a shell for its exec tool. The
# tag is PicoClaw's exact version.
{ pkgs, build }:
args:
build (
  args
  // {
    name = "agent-appliance/picoclaw";
    versioned = pkgs.appliance-picoclaw;
    match = "exact";
  }
)
