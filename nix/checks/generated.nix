# The committed generated/ trees are exactly what the specs generate: no
# drift, no hand edits (`appliance generate --check`, which also verifies
# the digests in SHA256SUMS).
{ pkgs }:
let
  inherit (pkgs) lib;
  root = ../..;
in
pkgs.runCommand "generated-up-to-date"
  {
    src = lib.fileset.toSource {
      inherit root;
      fileset = lib.fileset.unions [
        ../../appliance.toml
        ../../generated
        ../../examples
      ];
    };
    nativeBuildInputs = [ pkgs.agent-appliance ];
  }
  ''
    cd "$src"
    appliance generate --check
    for spec in examples/*/appliance.toml; do
      appliance generate --check --spec "$spec"
    done
    touch "$out"
  ''
