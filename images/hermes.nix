# Hermes Agent from its PyPI wheels (nix/packages/hermes.nix) with Chromium
# and agent-browser for its browser tool and the Docker CLI for code
# execution. The tag is Hermes' exact version.
{ pkgs, build }:
args:
build (
  args
  // {
    name = "agent-appliance/hermes";
    versioned = pkgs.appliance-hermes;
    match = "exact";
  }
)
