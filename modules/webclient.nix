# The admins' Matrix web client on the Matrix host
# (docs/first-conversation.md): Cinny from nixpkgs, locked to this
# appliance's homeserver (no other server can be picked), served by nginx on
# loopback (reached with `ssh -L`) and on the overlay only, never on a
# public interface. nginx also proxies the client API to Synapse on
# loopback, so the browser talks to one origin. Rust decides the addresses,
# the homeserver list Cinny offers, Synapse's address and nginx's ordering
# (src/generator/render/webclient.rs); the host's generated values
# (generated/hosts/<host>/options.json, read by nix/generated.nix) set these
# options.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.appliance.webClient;
  inherit (import ./lib.nix lib) units ipv4;
  cinny = pkgs.cinny.override {
    conf = {
      allowCustomHomeservers = false;
      defaultHomeserver = 0;
      homeserverList = cfg.homeservers;
    };
  };
  # Synapse's client-server API and its client pages (password reset and
  # SSO pages live under `/_synapse/client`), at the client's origin.
  proxied = {
    proxyPass = cfg.synapse;
    extraConfig = "client_max_body_size 50M;";
  };
in
{
  options.appliance.webClient = {
    enable = lib.mkEnableOption "the admins' Matrix web client (Cinny behind nginx)";

    listen = lib.mkOption {
      type = lib.types.listOf (
        lib.types.submodule {
          options = {
            addr = lib.mkOption {
              type = ipv4;
              description = "An address nginx listens on.";
            };
            port = lib.mkOption {
              type = lib.types.port;
              description = "Its port.";
            };
          };
        }
      );
      example = [
        {
          addr = "127.0.0.1";
          port = 8080;
        }
      ];
      description = "Where nginx serves the client: loopback, and the overlay address when hosts are linked.";
    };

    homeservers = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      example = [ "http://127.0.0.1:8080" ];
      description = "The homeserver URLs Cinny offers (the client's own origins), the first by default; no other can be typed in.";
    };

    synapse = lib.mkOption {
      type = lib.types.strMatching "http://[^[:space:]]+";
      example = "http://127.0.0.1:8008";
      description = "Synapse's client API on loopback, where nginx proxies `/_matrix/` and `/_synapse/client/`.";
    };

    after = units "Units nginx starts after (the overlay's address, when it listens there).";
    requires = units "Units nginx needs.";
    wants = units "Units nginx wants (`network-online.target` with an overlay).";
  };

  config = lib.mkIf cfg.enable {
    services.nginx = {
      enable = true;
      virtualHosts.appliance-web-client = {
        listen = cfg.listen;
        root = cinny;
        # Cinny routes in the browser: unknown paths are its pages.
        locations."/".tryFiles = "$uri $uri/ /index.html";
        locations."/_matrix/" = proxied;
        locations."/_synapse/client/" = proxied;
      };
    };
    systemd.services.nginx = {
      inherit (cfg) after requires wants;
    };
  };
}
