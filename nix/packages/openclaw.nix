# OpenClaw with its Matrix plugin, from npm. Every package of the tree is
# pinned by the integrity hash npm recorded in nix/locks/openclaw/
# package-lock.json (written by scripts/lock-openclaw.sh); importNpmLock
# fetches each one by that hash, so no dependency hash is needed.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs_24,
  nodejs_26 ? null,
  makeWrapper,
  source,
  # Plugin ids of dist/extensions to keep; every other bundled plugin is
  # removed (the overlay passes `bundled_plugins` of
  # generated/images/openclaw.json, from src/generator/kinds/openclaw/mod.rs).
  bundledPlugins,
}:
let
  npmRoot = ../locks/openclaw;
  lock = lib.importJSON (npmRoot + "/package-lock.json");
  locked = name: lock.packages."node_modules/${name}";
  lockMatches =
    (locked "openclaw").version == source.version
    && (locked "openclaw").integrity == source.hash
    && (locked "@openclaw/matrix").integrity == source.matrixHash;

  # OpenClaw's engines field: Node ">=24.16.0 <25 || >=26.1.0". The first
  # of nixpkgs' Node 24 and Node 26 that satisfies it; the failure names
  # both versions.
  satisfies =
    node:
    node != null
    && (
      (lib.versions.major node.version == "24" && lib.versionAtLeast node.version "24.16.0")
      || lib.versionAtLeast node.version "26.1.0"
    );
  candidates = lib.filter satisfies [
    nodejs_24
    nodejs_26
  ];

  # Both checks are made when the package is built, not when it is merely
  # referenced: a configuration that replaces the image (the VM test) must
  # evaluate without them.
  checked =
    value:
    lib.throwIfNot lockMatches
      "agent-appliance: nix/locks/openclaw/package-lock.json does not match nix/sources.json; run `scripts/lock-openclaw.sh`."
      (
        lib.throwIf (candidates == [ ]) ''
          agent-appliance: OpenClaw ${source.version} needs Node.js >=24.16.0 <25 or >=26.1.0; this
          nixpkgs has nodejs_24 ${nodejs_24.version}${
            lib.optionalString (nodejs_26 != null) " and nodejs_26 ${nodejs_26.version}"
          }.
        '' value
      );
  nodejs = checked (lib.head candidates);
in
buildNpmPackage {
  pname = "openclaw";
  inherit (source) version;
  src = npmRoot;
  inherit nodejs;

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
    # npm ran no scripts, so OpenClaw would finish its own package
    # lifecycle (its postinstall, local only) at first start, writing into
    # its package directory: the read-only store refuses ("package
    # lifecycle is incomplete ... EACCES", seen in the rehearsal). Finish it
    # now. It prunes dist/ to its inventory, so the plugin is copied after.
    HOME=$TMPDIR ${lib.getExe nodejs} node_modules/openclaw/openclaw.mjs --version
    test ! -e node_modules/openclaw/.openclaw-lifecycle-pending
    # The Matrix plugin's client syncs with a timeline limit of its own
    # (nix/patches/README.md).
    patch --forward -p1 -d node_modules/@openclaw/matrix/node_modules/matrix-js-sdk \
      < ${../patches/matrix-js-sdk-sync-timeline-limit.patch}
    # Bake the Matrix plugin in as a bundled plugin (id `matrix`), where
    # OpenClaw looks for its own: nothing is installed at runtime. Its
    # `openclaw` peer dependency resolves to the package above it.
    cp -r node_modules/@openclaw/matrix node_modules/openclaw/dist/extensions/matrix
    # OpenClaw scans and loads every bundled plugin at each start: keep
    # only those the generated config uses, so no other can load.
    for plugin in node_modules/openclaw/dist/extensions/*; do
      case " ${lib.concatStringsSep " " bundledPlugins} " in
        *" ''${plugin##*/} "*) ;;
        *) rm -r "$plugin" ;;
      esac
    done
    for plugin in ${lib.escapeShellArgs bundledPlugins}; do
      test -d "node_modules/openclaw/dist/extensions/$plugin" \
        || { echo "agent-appliance: OpenClaw bundles no plugin $plugin" >&2; exit 1; }
    done
    cp -r node_modules package.json $out/lib/openclaw/
    makeWrapper ${lib.getExe nodejs} $out/bin/openclaw \
      --add-flags $out/lib/openclaw/node_modules/openclaw/openclaw.mjs
    runHook postInstall
  '';

  passthru = {
    matrixPlugin = "lib/openclaw/node_modules/openclaw/dist/extensions/matrix";
    inherit bundledPlugins;
    # The Node it runs on, for scripts beside it (appliance-openclaw-start).
    inherit nodejs;
  };

  meta = {
    description = "OpenClaw gateway with the @openclaw/matrix plugin";
    homepage = "https://github.com/openclaw/openclaw";
    license = lib.licenses.mit;
    mainProgram = "openclaw";
  };
}
