# OpenClaw's gateway with its Matrix plugin baked in (nix/packages/openclaw.nix)
# and, for its browser tool, Chromium; nothing is installed at runtime. The
# tag is OpenClaw's exact version.
{ pkgs, build }:
args:
build (
  args
  // {
    name = "agent-appliance/openclaw";
    versioned = pkgs.appliance-openclaw;
    match = "exact";
  }
)
