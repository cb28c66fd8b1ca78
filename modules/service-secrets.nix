# Secrets of the appliance's own service sandboxes (docs/sandboxes.md):
# SearXNG's key, which signs its URLs, and webextract's, which its clients
# send. Each is an env file made on this host at first boot, 0400 root,
# never in the Nix store; Docker reads it into the sandbox. Rust decides
# which files a host needs (src/generator/render/host.rs); the host's
# generated values (generated/hosts/<host>/options.json, read by
# nix/generated.nix) set `appliance.serviceSecrets`, and the sandboxes'
# units order themselves after `appliance-service-secrets.service`.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.appliance.serviceSecrets;
  inherit (import ./lib.nix lib) secretsOneshot;

  # One env file: made once (a file that is there and not empty is kept,
  # so a restart never changes a key the services already share), written
  # beside its final name and renamed, so a reader never sees half of it.
  # Every value reaches the shell through `lib.escapeShellArg`.
  make =
    secret:
    let
      file = lib.escapeShellArg secret.file;
      tmp = lib.escapeShellArg "${secret.file}.tmp";
    in
    ''
      mkdir -p -m 0700 ${lib.escapeShellArg (builtins.dirOf secret.file)}
      if [ ! -s ${file} ]; then
        printf '%s=%s\n' ${lib.escapeShellArg secret.variable} "$(head -c 32 /dev/urandom | base64 -w0 | tr -d '=+/')" > ${tmp}
        chmod 0400 ${tmp}
        mv ${tmp} ${file}
      fi
    '';
in
{
  options.appliance.serviceSecrets = lib.mkOption {
    type = lib.types.attrsOf (
      lib.types.submodule {
        options = {
          file = lib.mkOption {
            # Absolute: the unit runs with no working directory of its own.
            type = lib.types.strMatching "/.+";
            example = "/var/lib/appliance/secrets/searxng/env";
            description = "The env file to make; its directory is made 0700.";
          };
          variable = lib.mkOption {
            # An environment variable's name, as Docker's `--env-file` reads it.
            type = lib.types.strMatching "[A-Za-z_][A-Za-z0-9_]*";
            example = "SEARXNG_SECRET";
            description = "The variable the file sets to 32 random bytes, base64 without `=+/`.";
          };
        };
      }
    );
    default = { };
    example = lib.literalExpression ''
      { searxng = { file = "/var/lib/appliance/secrets/searxng/env"; variable = "SEARXNG_SECRET"; }; }
    '';
    description = ''
      Env files of the appliance's service sandboxes, each holding one random
      key, made by `appliance-service-secrets.service` when missing. Empty: no
      unit.
    '';
  };

  config = lib.mkIf (cfg != { }) {
    systemd.services.appliance-service-secrets = {
      description = "Create the appliance services' secrets on first boot";
      path = [ pkgs.coreutils ];
      serviceConfig = secretsOneshot;
      script = lib.concatMapStrings make (lib.attrValues cfg);
    };
  };
}
