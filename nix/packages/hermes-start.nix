# Entry point of the Hermes image: see hermes-start.sh (the rehearsal's
# Debian-built image runs the same script).
{
  writeShellApplication,
  coreutils,
  appliance-hermes,
}:
writeShellApplication {
  name = "appliance-hermes-start";
  # The image has no coreutils of its own (rm): writeShellApplication puts
  # only these on PATH.
  runtimeInputs = [
    coreutils
    appliance-hermes
  ];
  text = builtins.readFile ./hermes-start.sh;
}
