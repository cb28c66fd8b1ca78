# Entry point of the Hermes image: see hermes-start.sh (the rehearsal's
# Debian-built image runs the same script).
{
  writeShellApplication,
  appliance-hermes,
}:
writeShellApplication {
  name = "appliance-hermes-start";
  runtimeInputs = [ appliance-hermes ];
  text = builtins.readFile ./hermes-start.sh;
}
