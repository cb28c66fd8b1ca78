# The loader of a generated tree: `import ./nix/generated.nix ./generated`
# is the appliance that `appliance generate` wrote as data (appliance.json
# and hosts/<host>/options.json), for flake.nix, nix/hosts.nix,
# modules/appliance.nix and the checks:
#
#   { name; matrixHost;
#     hosts.<host> = { target; system; sandboxes; agents; cudaCapabilities?;
#                      inference?; values; notes; module; };
#     images.<image> = { file; systems; }; }
#
# One rule for files: generated JSON names another generated file as
# `{ "generatedFile": "<path relative to the generated directory>" }`, and
# the loader turns every such value, wherever it stands, into the path
# `dir + "/<path>"` (copied into the store where it is used, as a path
# literal would be).
#
# `values` are a host's `appliance.*` option values (docs/options.md);
# `module` is the NixOS module that sets them when `appliance.enable` is on
# and `appliance.host` names the host. Its condition reads the host's name
# only, never the values, so no option depends on itself. `notes` (why a
# value is what it is, e.g. each runtime more permissive than strict) and
# `about` are for readers; no option reads them.
dir:
let
  readJSON = file: builtins.fromJSON (builtins.readFile file);

  # A set whose only key is `generatedFile` is a file, also inside the
  # maps keyed by the spec. No such map can hold that key alone: their keys
  # are names (hosts, agents, sandboxes, images, service secrets: a-z, 0-9
  # and `-`, src/generator/model/names.rs, so never the capital F), absolute
  # paths (`directories`, a sandbox's `files`, `egress.credentials`), or
  # names the generator chooses (a sandbox's `environment`, which the spec
  # sets no variable of; firewall interfaces). A spec that could name a key
  # freely would need a stricter marker here and in
  # src/generator/render/values.rs.
  resolve =
    value:
    if builtins.isAttrs value then
      if builtins.attrNames value == [ "generatedFile" ] then
        dir + "/${value.generatedFile}"
      else
        builtins.mapAttrs (_name: resolve) value
    else if builtins.isList value then
      map resolve value
    else
      value;

  index = resolve (readJSON (dir + "/appliance.json"));

  hostOf =
    name: entry:
    let
      file = readJSON entry.options;
      values = resolve file.appliance;
    in
    removeAttrs entry [ "options" ]
    // {
      inherit values;
      inherit (file) notes;
      module =
        { config, lib, ... }:
        {
          _file = toString entry.options;
          config = lib.mkIf (config.appliance.enable && config.appliance.host == name) {
            appliance = values;
          };
        };
    };
in
removeAttrs index [ "about" ]
// {
  hosts = builtins.mapAttrs hostOf index.hosts;
}
