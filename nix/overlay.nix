# The appliance's packages on top of nixpkgs: the `appliance` CLI (the
# generated hosts call `pkgs.agent-appliance`), the agents packaged from
# their pinned upstream releases, and a gVisor new enough for the Pi.
# Every upstream artifact nixpkgs does not pin itself is pinned by hash in
# nix/sources.json or the lock files beside it.
final: prev:
let
  sources = final.lib.importJSON ./sources.json;
in
{
  agent-appliance = final.callPackage ./packages/appliance.nix { };

  gvisor = final.callPackage ./packages/gvisor.nix {
    gvisor = prev.gvisor;
    source = sources.gvisor;
  };

  appliance-openclaw = final.callPackage ./packages/openclaw.nix {
    source = sources.openclaw;
    # The one list of the bundled plugins the image keeps, which the
    # generator owns (read when the package is built).
    bundledPlugins = (final.lib.importJSON ../generated/images/openclaw.json).bundled_plugins;
  };

  appliance-picoclaw = final.callPackage ./packages/picoclaw.nix {
    source = sources.picoclaw;
  };

  appliance-code-runner = final.callPackage ./packages/code-runner.nix { };

  appliance-dind-start = final.callPackage ./packages/dind-start.nix { };

  appliance-hermes-start = final.callPackage ./packages/hermes-start.nix { };

  appliance-openclaw-start = final.callPackage ./packages/openclaw-start.nix { };

  appliance-webextract = final.callPackage ./packages/webextract.nix { };

  appliance-hermes = final.callPackage ./packages/hermes.nix {
    source = sources.hermes-agent;
    browserSource = sources.agent-browser;
  };
}
