# The `appliance` CLI from this repository's Cargo.lock. On the appliance it
# runs at boot (`appliance bootstrap`) to create what cannot live in the
# store: secrets, Matrix accounts, rooms and agent tokens.
{ lib, rustPlatform }:
let
  manifest = lib.importTOML ../../Cargo.toml;
  root = ../..;
in
rustPlatform.buildRustPackage {
  pname = manifest.package.name;
  inherit (manifest.package) version;

  # Only what cargo reads: a change to docs or Nix files does not rebuild.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../../Cargo.toml
      ../../Cargo.lock
      ../../build.rs
      # build.rs reads the upstream pins from it.
      ../../nix/sources.json
      ../../src
      ../../tests
      ../../benches
      ../../examples
    ];
  };

  cargoLock.lockFile = ../../Cargo.lock;

  # The integration tests start real tools (nix-instantiate, dockerd, runsc,
  # Synapse); they run in `.ci/run`, not in the sandbox.
  doCheck = false;

  meta = {
    inherit (manifest.package) description;
    license = lib.licenses.asl20;
    mainProgram = "appliance";
    platforms = lib.platforms.linux;
  };
}
