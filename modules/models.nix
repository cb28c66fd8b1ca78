# The spec's models, pulled into Ollama's sandbox once it answers
# (docs/sandboxes.md): `appliance-models.service` runs pull-models.sh
# (beside this file) with the URL and the models, which names each model
# that fails in the unit's journal (`journalctl -u appliance-models`) and
# then fails the unit. Rust decides which sandbox serves inference, where
# and which models (src/generator/render/host.rs); the generated values
# (generated/hosts/<host>/options.json, read by nix/generated.nix) of the
# host whose Ollama runs in a sandbox set these options. The appliance is
# not ready until the models are there: the unit joins
# `appliance.ready.units` (modules/ready.nix).
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.appliance.models;
  inherit (import ./lib.nix lib) modelName;
in
{
  options.appliance.models = {
    enable = lib.mkEnableOption ''
      pulling the spec's models into Ollama's sandbox at boot
      (`appliance-models.service`), before `appliance-ready.target`'';

    sandboxUnit = lib.mkOption {
      # A unit name: it lands in `After=`/`Requires=`, which split on spaces.
      type = lib.types.strMatching "[A-Za-z0-9:_.@-]+[.]service";
      example = "docker-ollama.service";
      description = "The unit of Ollama's sandbox; the pull starts after it and stops with it.";
    };

    url = lib.mkOption {
      # One word of the unit's command line.
      type = lib.types.strMatching "https?://[^[:space:]]+";
      example = "http://10.88.0.2:11434";
      description = "Where the host reaches Ollama's API in its sandbox.";
    };

    names = lib.mkOption {
      # They go into the pull's JSON body unquoted (lib.nix).
      type = lib.types.listOf modelName;
      example = [ "qwen3.5:27b-q4_K_M" ];
      description = "The models to pull, in this order; one that fails is named in the journal and fails the unit.";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.appliance-models = {
      description = "Pull the appliance's models into Ollama's sandbox";
      after = [ cfg.sandboxUnit ];
      requires = [ cfg.sandboxUnit ];
      wantedBy = [ "multi-user.target" ];
      path = [ pkgs.curl ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        # Tens of gigabytes per model.
        TimeoutStartSec = "infinity";
        ExecStart = utils.escapeSystemdExecArgs (
          [
            "${pkgs.bash}/bin/sh"
            "${./pull-models.sh}"
            cfg.url
          ]
          ++ cfg.names
        );
      };
    };
    # Last, after the sandboxes the host's generated values list.
    appliance.ready.units = lib.mkAfter [ "appliance-models.service" ];
  };
}
