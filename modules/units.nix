# Not a module: the option the modules' `after`/`requires`/`wants` share,
# a list of systemd unit names (`import ./units.nix lib`).
lib: description:
lib.mkOption {
  # A unit name: it lands in `After=`/`Requires=`/`Wants=`, which split on spaces.
  type = lib.types.listOf (
    lib.types.strMatching "[A-Za-z0-9:_.@\\-]+[.](service|target|device|mount|socket|path)"
  );
  default = [ ];
  inherit description;
}
