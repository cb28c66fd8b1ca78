# A pinned hash from nix/sources.json, or a build failure that says how to
# get it. Hashes are never invented: where one could not be computed
# without Nix's fetchers (GitHub sources, Go vendor trees), sources.json
# holds `null` and evaluation stops here with the command that prints it.
name: source: field:
let
  value = source.${field} or null;
in
if value != null then
  value
else
  throw ''
    agent-appliance: `${field}` of `${name}` is not pinned yet (nix/sources.json has null).
    A hash cannot be computed without Nix's fetchers, and a made-up one is never used.
    On a machine with Nix >= 2.18 and network access:
      ${source.prefetch or "see docs/flake.md, section `Filling in a hash`"}
    then put the printed SRI hash (sha256-...) in nix/sources.json at `${name}.${field}`
    and commit it. For a vendor or dependency hash, set the field to "" first: the
    failed build prints `got: sha256-...`, which is the value to pin.
  ''
