# Entry point of the OpenClaw image: see openclaw-start.sh (the rehearsal's
# Debian-built image runs the same script). It runs OpenClaw's own Node for
# its node:sqlite.
{
  writeShellApplication,
  coreutils,
  appliance-openclaw,
}:
writeShellApplication {
  name = "appliance-openclaw-start";
  # The image has no coreutils of its own (rm, id).
  runtimeInputs = [
    coreutils
    appliance-openclaw
    appliance-openclaw.nodejs
  ];
  text = builtins.readFile ./openclaw-start.sh;
}
