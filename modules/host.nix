# The machine around the sandboxes (docs/existing-host.md): its name,
# key-only SSH, the firewall and the appliance's directories. Rust decides
# the spec's SSH keys, every port the firewall opens (and on which
# interface) and the directories with their modes
# (src/generator/render/host.rs); the host's generated values
# (generated/hosts/<host>/options.json, read by nix/generated.nix) set these
# options, and this module maps them onto nixpkgs.
#
# What a host usually has its own opinion on is a default here
# (`lib.mkDefault`, or below it), so an existing NixOS host's own value
# wins; what the appliance's security rests on (no passwords over SSH, the
# firewall on) stays at normal priority, so a host setting the opposite
# gets an evaluation error instead of a weaker appliance
# (docs/existing-host.md lists both).
{
  config,
  lib,
  ...
}:
let
  inherit (import ./lib.nix lib) strings;
  cfg = config.appliance;
  ports = lib.mkOption {
    type = lib.types.listOf lib.types.port;
    default = [ ];
    description = "Ports opened.";
  };

  # A directory's owner or group.
  owner =
    what:
    lib.mkOption {
      type = lib.types.strMatching "[A-Za-z0-9_-]+";
      default = "root";
      description = "Its ${what} (a name or a number).";
    };
in
{
  options.appliance = {
    ssh.authorizedKeys = strings {
      example = [ "ssh-ed25519 AAAA... admin@laptop" ];
      description = "The spec's SSH public keys, which log in as root (unless the host forbids root logins).";
    };

    firewall = {
      allowedTCPPorts = ports;
      allowedUDPPorts = ports;
      interfaces = lib.mkOption {
        type = lib.types.attrsOf (
          lib.types.submodule {
            options = {
              allowedTCPPorts = ports;
              allowedUDPPorts = ports;
            };
          }
        );
        default = { };
        example = {
          br-appliance.allowedTCPPorts = [ 3128 ];
        };
        description = "Ports opened on one interface only (the sandboxes' bridge, the overlay).";
      };
    };

    directories = lib.mkOption {
      type = lib.types.attrsOf (
        lib.types.submodule {
          options = {
            mode = lib.mkOption {
              type = lib.types.strMatching "[0-7]{4}";
              example = "0711";
              description = "The directory's mode.";
            };
            user = owner "owner";
            group = owner "group";
          };
        }
      );
      default = { };
      example = {
        "/var/lib/appliance" = {
          mode = "0711";
        };
      };
      description = ''
        Directories made at boot (`systemd.tmpfiles.rules`, by absolute
        path): the appliance's state and secrets, the WireGuard key's, and
        the socket directories shared between an agent and its code
        sandbox.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    # Above nixpkgs' own defaults (the GCE profile sets `mkDefault ""`),
    # below anything a host sets itself: an existing NixOS host keeps its
    # name. `system.stateVersion` is the machine's own (nix/hosts.nix sets
    # it for the flake's new machines).
    networking.hostName = lib.mkOverride 900 cfg.host;

    # Key-only SSH; everything else on the firewall stays closed. Root logs
    # in with the spec's keys unless the host forbids it (`PermitRootLogin =
    # "no"` wins over this default); passwords stay off.
    services.openssh = {
      enable = true;
      settings = {
        PasswordAuthentication = false;
        KbdInteractiveAuthentication = false;
        PermitRootLogin = lib.mkDefault "prohibit-password";
      };
    };
    users.users.root.openssh.authorizedKeys.keys = cfg.ssh.authorizedKeys;

    networking.firewall = {
      enable = true;
      allowedTCPPorts = cfg.firewall.allowedTCPPorts;
      allowedUDPPorts = cfg.firewall.allowedUDPPorts;
      interfaces = cfg.firewall.interfaces;
    };

    systemd.tmpfiles.rules = lib.mapAttrsToList (
      path: dir: "d ${path} ${dir.mode} ${dir.user} ${dir.group} -"
    ) cfg.directories;
  };
}
