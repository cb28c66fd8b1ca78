# OpenClaw with its Matrix plugin, from npm. Every package of the tree is
# pinned by the integrity hash npm recorded in nix/locks/openclaw/
# package-lock.json (written by scripts/lock-openclaw.sh); importNpmLock
# fetches each one by that hash, so no dependency hash is needed.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs_24,
  makeWrapper,
  pin,
  source,
}:
let
  npmRoot = ../locks/openclaw;
  lock = lib.importJSON (npmRoot + "/package-lock.json");
  locked = name: lock.packages."node_modules/${name}";
in
assert lib.assertMsg (
  (locked "openclaw").version == source.version
  && (locked "openclaw").integrity == pin "openclaw" source "hash"
  && (locked "@openclaw/matrix").integrity == pin "openclaw" source "matrixHash"
) "agent-appliance: nix/locks/openclaw/package-lock.json does not match nix/sources.json; run `scripts/lock-openclaw.sh`.";
# OpenClaw's engines field asks for Node >= 24.16.
assert lib.assertMsg (lib.versionAtLeast nodejs_24.version "24.16.0")
  "agent-appliance: OpenClaw ${source.version} needs Node.js >= 24.16.0, nixpkgs has ${nodejs_24.version}.";
buildNpmPackage {
  pname = "openclaw";
  inherit (source) version;
  src = npmRoot;
  nodejs = nodejs_24;

  npmDeps = importNpmLock { inherit npmRoot; };
  npmConfigHook = importNpmLock.npmConfigHook;
  # Install scripts would download binaries at build time (the native Matrix
  # crypto module among them): nothing is fetched that is not in the lock.
  # Matrix end-to-end encryption therefore uses the WebAssembly crypto only.
  npmFlags = [ "--ignore-scripts" ];
  dontNpmBuild = true;

  nativeBuildInputs = [ makeWrapper ];

  installPhase = ''
    runHook preInstall
    mkdir -p $out/lib/openclaw $out/bin
    # Bake the Matrix plugin in as a bundled plugin (id `matrix`), where
    # OpenClaw looks for its own: nothing is installed at runtime. Its
    # `openclaw` peer dependency resolves to the package above it.
    cp -r node_modules/@openclaw/matrix node_modules/openclaw/dist/extensions/matrix
    cp -r node_modules package.json $out/lib/openclaw/
    makeWrapper ${lib.getExe nodejs_24} $out/bin/openclaw \
      --add-flags $out/lib/openclaw/node_modules/openclaw/openclaw.mjs
    runHook postInstall
  '';

  passthru.matrixPlugin = "lib/openclaw/node_modules/openclaw/dist/extensions/matrix";

  meta = {
    description = "OpenClaw gateway with the @openclaw/matrix plugin";
    homepage = "https://github.com/openclaw/openclaw";
    license = lib.licenses.mit;
    mainProgram = "openclaw";
  };
}
