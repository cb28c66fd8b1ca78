# The spec's models, pulled into Ollama's sandbox once it answers
# (docs/sandboxes.md): `appliance-models.service` runs the generated
# pull-models.sh, which names each model that fails in the unit's journal
# (`journalctl -u appliance-models`) and then fails the unit. Rust decides
# which sandbox serves inference and writes the script
# (src/generator/render/host.rs); the generated host module sets these options on the
# host whose Ollama runs in a sandbox. The appliance is not ready until the
# models are there: the unit joins `appliance.ready.units`
# (modules/ready.nix).
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.appliance.models;
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

    pullScript = lib.mkOption {
      type = lib.types.path;
      example = lib.literalExpression "./pull-models.sh";
      description = ''
        The script that pulls the models (generated/hosts/<host>/pull-models.sh),
        run by `sh` with `curl` on its path.
      '';
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
        ExecStart = utils.escapeSystemdExecArgs [
          "${pkgs.bash}/bin/sh"
          "${cfg.pullScript}"
        ];
      };
    };
    # Last, after the sandboxes the generated module lists, as it always was.
    appliance.ready.units = lib.mkAfter [ "appliance-models.service" ];
  };
}
