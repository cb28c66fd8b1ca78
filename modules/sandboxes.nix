# The sandboxes (docs/sandboxes.md, SECURITY.md): each one a Docker
# container under a gVisor runtime, run by nixpkgs' `oci-containers` as
# `docker-<name>.service`. Rust decides everything about a sandbox (its
# image, user, mounts, environment, `docker run` flags with the runtime
# and the fixed address: src/generator/docker.rs; the units it waits for and whether
# it waits for a secret file: src/generator/render/host.rs); the generated host
# module sets `appliance.sandboxes`, and this module maps each entry onto
# `virtualisation.oci-containers.containers`, the unit's ordering and, for
# a sandbox waiting for its secrets, a path unit.
{
  config,
  lib,
  pkgs,
  applianceImages,
  ...
}:
let
  cfg = config.appliance.sandboxes;
  inherit (import ./lib.nix lib) units strings conditionPath;

  # The sandboxes whose start waits for a file: on a host without Matrix
  # no bootstrap writes its agents' secrets; `appliance-pair.service`
  # fetches them from the hub over the overlay (docs/pairing.md). An agent
  # whose Docker is the warden's approval broker waits for its socket
  # (Hermes offers no `terminal` tool if its Docker is missing at start). Until
  # then each such sandbox is skipped ("unmet condition check
  # (ConditionPathExists=...)" in the journal) instead of failing and
  # re-streaming its image forever, and its path unit starts it when the
  # file appears.
  waiting = lib.filterAttrs (_name: sandbox: sandbox.waitFor != null) cfg;
in
{
  options.appliance.sandboxes = lib.mkOption {
    type = lib.types.attrsOf (
      lib.types.submodule {
        options = {
          image = lib.mkOption {
            type = lib.types.str;
            example = "agent-appliance/picoclaw:0.2.9";
            description = "The image's name and tag, as `docker run` names it.";
          };
          imageFile = lib.mkOption {
            type = lib.types.path;
            example = lib.literalExpression "./generated/images/picoclaw.json";
            description = ''
              The generated image description (generated/images/<image>.json),
              built by the image builders of images/ (`fromGenerated`): the
              image Docker loads from the store, never pulled.
            '';
          };
          user = lib.mkOption {
            type = lib.types.strMatching "[0-9]+:[0-9]+";
            example = "1000:1000";
            description = "The numeric user and group the sandbox runs as.";
          };
          volumes = strings {
            description = "Its mounts (`source:target[:ro]`): named volumes and host directories.";
          };
          files = lib.mkOption {
            type = lib.types.attrsOf lib.types.path;
            default = { };
            example = lib.literalExpression ''{ "/etc/resolv.conf" = ./generated/hosts/hub/resolv.conf; }'';
            description = ''
              Generated files (its agent's config, its resolv.conf) mounted
              read-only from the store, by their path in the sandbox.
            '';
          };
          environment = lib.mkOption {
            type = lib.types.attrsOf lib.types.str;
            default = { };
            description = "Environment variables set in the sandbox.";
          };
          environmentFiles = strings {
            description = "Env files (secrets, never in the store) Docker reads into the sandbox.";
          };
          ports = strings {
            description = "Ports it publishes on one of the host's addresses (`address:port:port`).";
          };
          cmd = strings {
            description = "The command, when not the image's own.";
          };
          dependsOn = strings {
            description = "Other sandboxes it needs running (the code-execution sandbox of an agent).";
          };
          extraOptions = strings {
            description = ''
              The rest of its `docker run` flags: the gVisor runtime, the
              read-only root, dropped capabilities, limits, the network and
              its fixed address.
            '';
          };
          after = units "`After=` of `docker-<name>.service`.";
          requires = units "`Requires=` of `docker-<name>.service`.";
          wants = units "`Wants=` of `docker-<name>.service`.";
          waitFor = lib.mkOption {
            type = lib.types.nullOr conditionPath;
            default = null;
            example = "/var/lib/appliance/secrets/balthasar-pi/env";
            description = ''
              A file the sandbox cannot start without (its secrets, fetched
              by pairing; or the warden's approval broker socket its Docker
              is): the unit is skipped until it exists, and a path unit
              starts it when it appears.
            '';
          };
        };
      }
    );
    default = { };
    description = "The sandboxes of this host, by name.";
  };

  config = lib.mkIf (cfg != { }) {
    virtualisation.oci-containers.backend = "docker";
    virtualisation.oci-containers.containers = lib.mapAttrs (_name: sandbox: {
      inherit (sandbox)
        image
        user
        environment
        environmentFiles
        ports
        cmd
        dependsOn
        extraOptions
        ;
      volumes =
        sandbox.volumes ++ lib.mapAttrsToList (target: source: "${source}:${target}:ro") sandbox.files;
      imageStream = applianceImages.fromGenerated sandbox.imageFile;
    }) cfg;

    systemd.services = lib.mapAttrs' (
      name: sandbox:
      lib.nameValuePair "docker-${name}" (
        {
          inherit (sandbox) after requires wants;
        }
        // lib.optionalAttrs (sandbox.waitFor != null) {
          unitConfig.ConditionPathExists = sandbox.waitFor;
        }
      )
    ) cfg;

    systemd.paths = lib.mapAttrs' (
      name: sandbox:
      lib.nameValuePair "docker-${name}" {
        description = "Start docker-${name} once ${sandbox.waitFor} exists (its secrets fetched from the hub, docs/pairing.md, or its approval broker's socket, docs/warden.md)";
        wantedBy = [ "multi-user.target" ];
        pathConfig = {
          PathExists = sandbox.waitFor;
          Unit = "docker-${name}.service";
        };
      }
    ) waiting;
  };
}
