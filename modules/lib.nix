# Not a module: the option shapes the hand-written modules share
# (`inherit (import ./lib.nix lib) units strings;`).
lib: {
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
