# Hermes Agent from PyPI: the release wheel and every runtime dependency as
# wheels pinned by PyPI's sha256 (nix/locks/hermes-<system>.json, written by
# scripts/lock-hermes.sh), installed into one prefix without network access.
# Native wheels (manylinux) get their libraries from nixpkgs through
# autoPatchelf. Its browser tool drives Chromium through the agent-browser
# CLI, taken from its npm release (which carries prebuilt binaries) so
# nothing is fetched with npx at runtime.
{
  lib,
  stdenv,
  python313,
  fetchurl,
  autoPatchelfHook,
  makeWrapper,
  zlib,
  source,
  browserSource,
}:
let
  inherit (stdenv.hostPlatform) system;

  agentBrowser = stdenv.mkDerivation {
    pname = "agent-browser";
    inherit (browserSource) version;
    src = fetchurl {
      url = "https://registry.npmjs.org/agent-browser/-/agent-browser-${browserSource.version}.tgz";
      inherit (browserSource) hash;
    };
    nativeBuildInputs = [ autoPatchelfHook ];
    buildInputs = [ stdenv.cc.cc.lib ];
    # The npm wrapper script only picks the binary for the platform.
    installPhase = ''
      runHook preInstall
      install -Dm755 bin/agent-browser-linux-${
        if stdenv.hostPlatform.isAarch64 then "arm64" else "x64"
      } $out/bin/agent-browser
      runHook postInstall
    '';
  };
  lockFile = ../locks + "/hermes-${system}.json";
  lock =
    if builtins.pathExists lockFile then
      lib.importJSON lockFile
    else
      throw ''
        agent-appliance: there is no wheel lock for Hermes on ${system}
        (nix/locks/hermes-${system}.json). Write it on any machine with Python and
        PyPI access: `scripts/lock-hermes.sh ${system}`, then commit it.
      '';
  release = lib.findFirst (wheel: wheel.name == "hermes-agent") null lock.wheels;
  python = python313;
  sitePackages = "$out/${python.sitePackages}";
  wheels = map (wheel: fetchurl { inherit (wheel) url hash; }) lock.wheels;

  # Checked when the package is built, not when it is referenced (a
  # configuration that replaces the image must evaluate without them).
  checked =
    value:
    lib.throwIfNot
      (release != null && release.version == source.version && release.hash == source.hash)
      ''
        agent-appliance: nix/locks/hermes-${system}.json pins hermes-agent ${
          if release == null then "(none)" else release.version
        } (hash ${if release == null then "-" else release.hash}), but nix/sources.json asks for
        ${source.version} (${source.hash}); run `scripts/lock-hermes.sh ${system}`.
      ''
      (
        lib.throwIfNot (lib.versions.majorMinor python.version == lock.python) ''
          agent-appliance: the Hermes wheels are locked for CPython ${lock.python}, but nixpkgs'
          python313 is ${python.version}; re-run `scripts/lock-hermes.sh ${system}`.
        '' value
      );
in
stdenv.mkDerivation {
  pname = "hermes-agent";
  inherit (source) version;
  srcs = checked wheels;

  # nixpkgs' wheel installer (pypaInstallHook: `python -m installer` for each
  # wheel in dist/). A fetched wheel's store name is `<hash>-<file>.whl`,
  # and installer reads the package name from the file name, so each one is
  # copied to dist/ under its own name first, as nixpkgs' wheel unpacking does.
  unpackPhase = ''
    runHook preUnpack
    mkdir dist
    for wheel in $srcs; do
      cp "$wheel" "dist/$(stripHash "$wheel")"
    done
    runHook postUnpack
  '';

  nativeBuildInputs = [
    python.pkgs.pypaInstallHook
    autoPatchelfHook
    makeWrapper
  ];
  buildInputs = [
    stdenv.cc.cc.lib
    zlib
  ];

  postInstall = ''
    # Its Matrix adapter syncs with a timeline limit (nix/patches/README.md),
    # compiled again: the installer compiled the unpatched file.
    patch --forward -p1 -d "${sitePackages}" < ${../patches/hermes-matrix-sync-timeline-limit.patch}
    ${python.interpreter} -m compileall -q "${sitePackages}/plugins/platforms/matrix/adapter.py"
    # Console scripts point at the installer's interpreter; use plain
    # python with this prefix instead.
    rm -rf "$out/bin"
    for entry in hermes:hermes_cli.main hermes-agent:run_agent hermes-acp:acp_adapter.entry; do
      makeWrapper ${python.interpreter} "$out/bin/''${entry%%:*}" \
        --prefix PYTHONPATH : "${sitePackages}" \
        --add-flags "-c 'import sys, ${"$"}{entry#*:} as m; sys.exit(m.main())'"
    done
    ln -s ${agentBrowser}/bin/agent-browser $out/bin/agent-browser
  '';

  passthru = { inherit agentBrowser; };

  meta = {
    description = "Hermes Agent by Nous Research, from its PyPI release";
    homepage = "https://github.com/NousResearch/hermes-agent";
    license = lib.licenses.mit;
    mainProgram = "hermes";
    platforms = [ "x86_64-linux" ];
  };
}
