# Ollama as a host service (`[inference] sandbox = "host"`, outside gVisor;
# `appliance check` warns about it): nixpkgs' `services.ollama`, listening
# on one address only, where the sandboxes reach it. Rust decides the build
# (`cuda` on an NVIDIA host), the address, the port, the models and the
# units it waits for (src/generator/render/host.rs); the inference host's
# generated values (generated/hosts/<host>/options.json, read by
# nix/generated.nix) set these options, and this module maps them onto
# nixpkgs. In the default `gvisor` mode Ollama is a sandbox instead
# (modules/models.nix pulls its models) and none of this is set.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.appliance.ollama;
  inherit (import ./lib.nix lib) units ipv4 modelName;
in
{
  options.appliance.ollama = {
    enable = lib.mkEnableOption ''
      Ollama as a host service (`services.ollama`), outside gVisor, serving
      the spec's models to the sandboxes'';

    cuda = lib.mkEnableOption "the CUDA build of Ollama (`pkgs.ollama-cuda`), on an NVIDIA host";

    package = lib.mkOption {
      type = lib.types.package;
      default = if cfg.cuda then pkgs.ollama-cuda else pkgs.ollama;
      defaultText = lib.literalExpression "if config.appliance.ollama.cuda then pkgs.ollama-cuda else pkgs.ollama";
      description = "The Ollama package.";
    };

    address = lib.mkOption {
      # One address: Ollama's `OLLAMA_HOST` takes one.
      type = ipv4;
      example = "10.88.0.1";
      description = ''
        The one address Ollama listens on: the host's address on the
        sandboxes' bridge, or on the overlay when agents of other hosts use it.
      '';
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 11434;
      description = "Ollama's port.";
    };

    models = lib.mkOption {
      # As model::names checks them.
      type = lib.types.listOf modelName;
      default = [ ];
      example = [ "qwen3:8b" ];
      description = "The models Ollama pulls at start (`services.ollama.loadModels`).";
    };

    after = units "Units Ollama starts after (the bridge and, on the overlay, its address).";
    requires = units "Units Ollama needs (the bridge and, on the overlay, its interface).";
    wants = units "Units Ollama pulls in without needing them (`network-online.target` on the overlay).";
  };

  config = lib.mkIf cfg.enable {
    services.ollama = {
      enable = true;
      inherit (cfg) package port;
      host = cfg.address;
      loadModels = cfg.models;
    };
    systemd.services.ollama = {
      inherit (cfg) after requires wants;
    };
  };
}
