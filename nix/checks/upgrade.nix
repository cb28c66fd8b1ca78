# NixOS VM test of `appliance upgrade` (docs/upgrade.md) with a real
# `switch-to-configuration` and rollback. Real Nix only: the machines that
# build this repository have no nixpkgs and cannot run it; tests/upgrade.rs
# proves the same orchestration there with a stand-in for the switch.
#
# The Matrix host boots as hub.nix boots it (every sandbox a busybox
# sleeper under its real image's name), with backups on into a local
# repository. Its specialisation `broken` is the "upgrade": casper's image
# swapped for one that exits at start, and a unit that migrates casper's
# state first, as a new agent version would. `appliance upgrade --system
# <broken>` must fail the health gate, switch back to the generation that
# ran (`nix-env --switch-generation` + `switch-to-configuration switch`),
# restore the state snapshot (the migration gone, the fact told before
# back), say so in the ops room and the audit trail, and the agents answer
# again. The agents' answers come from a stand-in
# (upgrade-standin-agent.py): the sleepers answer nobody.
{
  pkgs,
  lib,
  generated,
  host,
  appliance,
}:
let
  sandboxes = generated.hosts.${host}.sandboxes;
  plan = lib.importJSON ../../generated/bootstrap/plan.json;
  agents = map (a: a.localpart) (
    lib.filter (a: a.kind == "agent" && lib.elem a.localpart (lib.attrNames sandboxes)) plan.accounts
  );
  admin = (lib.findFirst (a: a.kind == "admin") null plan.accounts).user_id;
  casperImage = sandboxes.casper;
  casperVolume = "/var/lib/docker/volumes/appliance-casper-state/_data";

  tinyImage = import ./tiny-image.nix pkgs;

  # What the generator writes for a Matrix host with `[backup]`
  # (src/generator/render/backup.rs), into a repository on the VM's disk.
  backupConfig = pkgs.writeText "backup.json" (
    builtins.toJSON {
      schema = 1;
      appliance = plan.appliance;
      repository = "/var/lib/appliance-backup-repo";
      password_file = "/root/backup-password";
      staging_dir = "/var/lib/appliance/backup/staging";
      status_file = "/var/lib/appliance/backup/status.json";
      unit = "restic-backups-appliance.service";
      volume_root = "/var/lib/docker/volumes";
      volumes = map (agent: {
        name = "appliance-${agent}-state";
        inherit agent;
      }) agents;
      postgresql = {
        database = "matrix-synapse";
        owner = "matrix-synapse";
        socket_dir = "/run/postgresql";
        superuser = "postgres";
        uid = 71;
        gid = 71;
      };
      paths = [
        {
          name = "synapse-signing-key";
          path = "/var/lib/matrix-synapse/homeserver.signing.key";
          what = "Synapse's signing key";
        }
        {
          name = "appliance-secrets";
          path = "/var/lib/appliance/secrets";
          what = "the appliance's secrets";
        }
        {
          name = "warden";
          path = "/var/lib/appliance/warden";
          what = "the warden's state and audit trail";
        }
      ];
      units = [
        "matrix-synapse.service"
        "appliance-warden.service"
      ] ++ map (name: "docker-${name}.service") (lib.attrNames sandboxes);
    }
  );
in
pkgs.testers.runNixOSTest {
  name = "appliance-${host}-upgrade";
  globalTimeout = 30 * 60;
  nodes.machine = {
    imports = [
      (import ./hub-node.nix { inherit appliance generated host; })
      (import ./sleepers.nix { inherit pkgs generated host; })
    ];

    appliance.backup = {
      enable = true;
      configFile = backupConfig;
      repository = "/var/lib/appliance-backup-repo";
      passwordFile = "/root/backup-password";
    };
    environment.systemPackages = [ pkgs.python3 ];

    # The upgrade: casper's new version migrates its state, then exits
    # at start. Above the base's mkForce, so it wins.
    specialisation.broken.configuration = {
      virtualisation.oci-containers.containers.casper.imageStream = lib.mkOverride 40 (
        tinyImage casperImage [ "false" ]
      );
      systemd.services.casper-migrates = {
        wantedBy = [ "multi-user.target" ];
        before = [ "docker-casper.service" ];
        serviceConfig.Type = "oneshot";
        script = "echo migrated > ${casperVolume}/schema";
      };
    };
  };

  testScript = ''
    import shlex

    machine.wait_for_unit("appliance-bootstrap.service")
    machine.wait_for_unit("appliance-warden.service")
    for name in ${builtins.toJSON (lib.attrNames sandboxes)}:
        machine.wait_for_unit(f"docker-{name}.service")

    # The repository's password, then the scheduled unit's first run
    # (it makes the repository: `initialize = true`).
    machine.succeed("head -c 32 /dev/urandom | base64 > /root/backup-password && chmod 0400 /root/backup-password")
    machine.succeed("appliance backup now")
    machine.succeed("echo 'the reactor key is under the third stone' > ${casperVolume}/fact")

    machine.succeed(
        "systemd-run --unit=standin-agents ${pkgs.python3}/bin/python3 ${./upgrade-standin-agent.py} "
        + "http://127.0.0.1:8008 /var/lib/appliance ${admin} ${lib.concatStringsSep " " agents}"
    )

    before = machine.succeed("readlink /nix/var/nix/profiles/system").strip()
    broken = machine.succeed("readlink -f /run/current-system/specialisation/broken").strip()

    # --dry-run changes nothing.
    said = machine.succeed(f"appliance upgrade --dry-run --system {shlex.quote(broken)}")
    assert "sandboxes that restart: casper" in said, said
    assert machine.succeed("readlink /nix/var/nix/profiles/system").strip() == before

    # The failing upgrade.
    status, said = machine.execute(f"appliance upgrade --system {shlex.quote(broken)} --timeout 180 2>&1")
    print(said)
    assert status == 1, status
    for line in [
        "FAILED: sandbox casper",
        "upgrade FAILED",
        "Rolled back: the system to generation",
        "After the rollback: healthy, every agent answers",
    ]:
        assert line in said, line

    # The system: the generation that ran, activated again.
    machine.succeed(f"test \"$(readlink /nix/var/nix/profiles/system)\" = {shlex.quote(before)}")
    machine.succeed("test \"$(readlink -f /run/current-system)\" = \"$(readlink -f /nix/var/nix/profiles/system)\"")
    machine.wait_until_succeeds("docker inspect -f '{{.State.Running}}' casper | grep -q true")
    # The state: the fact back, the migration gone.
    machine.succeed("grep -q 'third stone' ${casperVolume}/fact")
    machine.succeed("test ! -e ${casperVolume}/schema")
    # Said in the audit trail, which the rollback kept and which verifies.
    machine.succeed("grep -q upgrade.rolled_back /var/lib/appliance/warden/audit.jsonl")
    machine.succeed("appliance audit verify")
    machine.succeed("appliance backup list | grep -q generation-")
    machine.succeed("appliance backup check")
  '';
}
