# appliance-webextract (nix/packages/webextract.py): the appliance's own
# page extraction service for the `web_extract` tool of Hermes' `crawler`,
# on nixpkgs' trafilatura. It runs as a non-root user and reads its key
# from the environment. The service has no releases of its own, so the tag
# is the layout's revision and the version label is trafilatura's.
{ pkgs, build }:
args:
build (
  args
  // {
    name = "agent-appliance/webextract";
    versioned = pkgs.python3Packages.trafilatura;
    match = "none";
  }
)
