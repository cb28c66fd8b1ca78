# nixosModules.default: the appliance on any NixOS machine. It carries the
# option values `appliance generate` wrote for every host of the spec, as
# modules made by the loader (nix/generated.nix, which also makes
# `generated`); setting `appliance.host` picks which one this machine is.
# That host's values (generated/hosts/<host>/options.json) are the spec's
# decisions, for the options that the hand-written modules imported below
# declare (docs/options.md); they map those values onto nixpkgs, once.
# This file only declares `appliance.enable` and
# `appliance.host`, passes the image builders (images/) to the modules and
# checks they fit the machine.
#
# It sets neither `nixpkgs.overlays` nor `nixpkgs.config`, so it works with
# a `pkgs` the consumer passes (`nixpkgs.pkgs`): the flake's own
# configurations add `overlays.default` and, on GPU hosts, allow the unfree
# NVIDIA/CUDA packages (nix/hosts.nix); other consumers do the same (docs/existing-host.md).
{ generated }:
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.appliance;
  hostNames = lib.attrNames generated.hosts;
  host = generated.hosts.${cfg.host};
in
{
  # Each host's module made by nix/generated.nix sets that host's values
  # (generated/hosts/<host>/options.json) and is inert unless
  # `appliance.host` names its host; the hand-written modules beside this
  # one declare the typed options those values set.
  imports = [
    ./backup.nix
    ./bootstrap.nix
    ./docker-gvisor.nix
    ./egress.nix
    ./host.nix
    ./models.nix
    ./pairing.nix
    ./nvidia.nix
    ./ollama.nix
    ./ready.nix
    ./sandboxes.nix
    ./service-secrets.nix
    ./synapse.nix
    ./warden.nix
    ./webclient.nix
    ./wireguard.nix
  ]
  ++ lib.mapAttrsToList (_name: host: host.module) generated.hosts;

  options.appliance = {
    enable = lib.mkEnableOption ''
      the agent appliance `${generated.name}`: AI agents in gVisor sandboxes
      talking over a private Matrix homeserver, as generated from appliance.toml.
      Enabling it turns on Docker, the OpenSSH server (keys only) and the
      firewall, and adds the host's sandboxes, services and boot units'';

    host = lib.mkOption {
      type = lib.types.enum hostNames;
      example = lib.head hostNames;
      description = ''
        Which host of the appliance this machine is: one of the hosts in
        appliance.toml (${lib.concatMapStringsSep ", " (name: "`${name}`") hostNames}).
        Its generated option values, generated/hosts/<host>/options.json, are applied.
      '';
    };
  };

  # What builds each sandbox's image from generated/images/<name>.json;
  # unconditional, as module arguments must be (it is lazy: nothing is built
  # or evaluated unless a generated host uses it).
  config._module.args.applianceImages = import ../images { inherit pkgs lib; };

  config.assertions = lib.mkIf cfg.enable [
    {
      # The generated hosts run `pkgs.agent-appliance` at boot and build
      # the agent images from the packages the overlay adds.
      assertion = pkgs ? agent-appliance && pkgs ? appliance-openclaw;
      message = ''
        appliance: this configuration's nixpkgs lacks the appliance's packages. Add the
        flake's overlay: `nixpkgs.overlays = [ agent-appliance.overlays.default ];` (or pass
        it to the `pkgs` you build with `import nixpkgs { overlays = [ ... ]; }`).
      '';
    }
    {
      assertion = pkgs.stdenv.hostPlatform.system == host.system;
      message = ''
        appliance host `${cfg.host}` is generated for ${host.system}, but this machine
        is ${pkgs.stdenv.hostPlatform.system}. Either:
          1. set `appliance.host` to the host of appliance.toml that this machine is, or
          2. fix `system` of [hosts.${cfg.host}] in appliance.toml and run `appliance generate`.
      '';
    }
  ];
}
