# SearXNG from nixpkgs: the search backend of Hermes' `crawler` tool. It
# runs as a non-root user, reads its generated settings (read-only) and its
# secret key from the environment. nixpkgs' SearXNG has no releases, so the
# tag is the layout's revision.
{ pkgs, build }:
args:
build (
  args
  // {
    name = "agent-appliance/searxng";
    versioned = pkgs.searxng;
    match = "none";
  }
)
