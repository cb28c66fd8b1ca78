# Not a module: the option shapes, types and unit settings the
# hand-written modules share (`inherit (import ./lib.nix lib) units strings;`).
lib: {
  # One IPv4 address, and one with its prefix length (`10.88.0.0/16`).
  ipv4 = lib.types.strMatching "([0-9]{1,3}[.]){3}[0-9]{1,3}";
  ipv4Prefix = lib.types.strMatching "([0-9]{1,3}[.]){3}[0-9]{1,3}/[0-9]{1,2}";

  # A Linux interface name: at most 15 bytes, no `/` or space.
  interfaceName = lib.types.strMatching "[A-Za-z0-9_.-]{1,15}";

  # An absolute path with no whitespace: it is also a systemd condition's
  # value (`ConditionPathExists=`).
  conditionPath = lib.types.strMatching "/[^[:space:]]+";

  # An Ollama model name as `appliance` checks it (model::names): it
  # reaches a JSON body and a command line unquoted.
  modelName = lib.types.strMatching "[A-Za-z0-9._:/-]+";

  # The option the modules' `after`/`requires`/`wants` share, a list of
  # systemd unit names.
  units =
    description:
    lib.mkOption {
      # A unit name: it lands in `After=`/`Requires=`/`Wants=`, which split on spaces.
      type = lib.types.listOf (
        lib.types.strMatching "[A-Za-z0-9:_.@\\-]+[.](service|target|device|mount|socket|path)"
      );
      default = [ ];
      inherit description;
    };

  # A file `appliance generate` writes, which the module reads or
  # installs: a `generatedFile` of the host's options.json, a path once
  # nix/generated.nix has loaded it; the example is the file's name.
  generatedFile =
    file: description:
    lib.mkOption {
      type = lib.types.path;
      example = lib.literalExpression "./${file}";
      inherit description;
    };

  # `ExecStart=` of the `appliance` command of `package` with `args`,
  # quoted for systemd; `utils` is the modules' argument of that name.
  execAppliance =
    utils: package: args:
    utils.escapeSystemdExecArgs ([ (lib.getExe package) ] ++ args);

  # `serviceConfig` of a unit that runs once per boot and writes secrets:
  # active once it has run (`RemainAfterExit`, so the units that require
  # it do not run it again), every file it makes private to its user.
  secretsOneshot = {
    Type = "oneshot";
    RemainAfterExit = true;
    UMask = "0077";
  };

  # A list of strings, empty unless a host sets it; `fields` are the
  # option's own (`description`, `example`).
  strings =
    fields:
    lib.mkOption (
      {
        type = lib.types.listOf lib.types.str;
        default = [ ];
      }
      // fields
    );
}
