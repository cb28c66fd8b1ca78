# Pairing over the overlay (docs/pairing.md). On the hub,
# `appliance-pairing.service` hands each other host exactly its own agents'
# Matrix credentials, to a peer that connects from its overlay address and
# proves it holds that address's WireGuard key; it listens on the hub's
# overlay address only, and the firewall opens its port on the overlay
# only. On a host without Matrix, `appliance-pair.service` fetches its
# agents' credentials from the hub once the link is up, written 0400 for
# each agent; nothing secret is in the image. Each agent's sandbox waits
# for its env file (`appliance.sandboxes.<name>.waitFor`), so a hub that
# is not up yet delays the agents, nothing else; rerun `systemctl restart
# appliance-pair` after rotating a token on the hub. Rust decides which
# host serves and which fetch, their configs (generated
# pairing-server.json / pairing.json: public keys and paths, no secret)
# and the units' ordering (src/generator/render/pairing.rs); the generated host
# module sets these options.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.appliance.pairing;
  inherit (import ./lib.nix lib)
    units
    generatedFile
    execAppliance
    secretsOneshot
    ;
  run =
    command: file:
    execAppliance utils cfg.package [
      command
      "--config"
      "${file}"
    ];
in
{
  options.appliance.pairing = {
    package = lib.mkPackageOption pkgs "agent-appliance" { };

    server = {
      enable = lib.mkEnableOption "the hub's pairing server (`appliance pair-serve`) on the overlay";
      config =
        generatedFile "pairing-server.json"
          "The server's config (generated pairing-server.json): its address, and each peer's host, key and agents.";
      after = units "Units the server starts after (bootstrap, which writes the credentials; the overlay's address).";
      requires = units "Units the server needs (the overlay's interface).";
      wants = units "Units the server wants (`network-online.target`).";
    };

    client = {
      enable = lib.mkEnableOption "fetching this host's agents' credentials from the hub (`appliance pair`)";
      config =
        generatedFile "pairing.json"
          "The client's config (generated pairing.json): the hub's address and key, this host's agents.";
      before = units "Units that start after the fetch (the agents' sandboxes).";
      after = units "Units the fetch starts after (the overlay's address).";
      requires = units "Units the fetch needs (the overlay's interface).";
      wants = units "Units the fetch wants (`network-online.target`).";
    };
  };

  config.systemd.services = {
    appliance-pairing = lib.mkIf cfg.server.enable {
      description = "Hand remote hosts their agents' Matrix credentials over the overlay";
      wantedBy = [ "multi-user.target" ];
      inherit (cfg.server) after requires wants;
      serviceConfig = {
        ExecStart = run "pair-serve" cfg.server.config;
        Restart = "always";
        RestartSec = 5;
        UMask = "0077";
      };
    };

    appliance-pair = lib.mkIf cfg.client.enable {
      description = "Fetch this host's agents' Matrix credentials from the hub over the overlay";
      wantedBy = [ "multi-user.target" ];
      inherit (cfg.client)
        before
        after
        requires
        wants
        ;
      serviceConfig = secretsOneshot // {
        ExecStart = run "pair" cfg.client.config;
        # The hub may boot later than this host: try again until it answers.
        Restart = "on-failure";
        RestartSec = 30;
      };
    };
  };
}
