# `appliance-ready.target`: reached once every unit the appliance needs is
# up (`systemctl is-active appliance-ready.target`; the VM tests and the
# rehearsal wait for it). The host's generated values
# (generated/hosts/<host>/options.json, read by nix/generated.nix) list its
# sandboxes; modules/models.nix adds the model pull.
{
  config,
  lib,
  ...
}:
let
  cfg = config.appliance.ready;
in
{
  options.appliance.ready.units = lib.mkOption {
    # Unit names: they land in `Requires=`/`After=`, which split on spaces.
    type = lib.types.listOf (
      lib.types.strMatching "[A-Za-z0-9:_.@-]+[.](service|target|mount|socket|path)"
    );
    default = [ ];
    example = [
      "docker-ollama.service"
      "appliance-models.service"
    ];
    description = ''
      Units `appliance-ready.target` requires and starts after: the host's
      sandboxes (`docker-<name>.service`) and, with `appliance.models.enable`,
      `appliance-models.service`.
    '';
  };

  config = lib.mkIf config.appliance.enable {
    systemd.targets.appliance-ready = {
      description = "The appliance is ready";
      wantedBy = [ "multi-user.target" ];
      requires = cfg.units;
      after = cfg.units;
    };
  };
}
