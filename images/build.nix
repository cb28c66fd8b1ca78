# Builds one agent image with nixpkgs' dockerTools. Every argument comes
# from the image's description in src/generator/model/image.rs (through
# generated/images/<name>.json and fromGenerated of images/default.nix), so the Nix image, the sandbox's run options and the
# rehearsal's test images agree on the user and the writable paths.
{ pkgs, lib }:
{
  # Repository and tag the sandboxes run, `name:tag`.
  name,
  tag,
  # { name, uid, gid, home }: the one account the image runs as.
  account,
  # [ { path, mode, uid, gid } ]: directories the account writes. Docker
  # mounts a volume or tmpfs there (the root is read-only); a new volume
  # copies the directory's owner and mode from the image, so they are set here.
  writable,
  entrypoint,
  # [ "KEY=value" ]
  env,
  packages,
  # The package whose release the tag names, and how: the tag is its
  # `exact` version, its `major` version or its `minor` (major.minor) one;
  # `none` for a package without releases (the label still names it).
  versioned,
  match,
}:
let
  tagMatches =
    if match == "exact" then
      versioned.version == tag
    else if match == "minor" then
      lib.versions.majorMinor versioned.version == tag
    else if match == "none" then
      true
    else
      lib.versions.major versioned.version == tag;
  # Checked when the image is built, not when a configuration that
  # replaces it (the VM test) is evaluated.
  checked = lib.throwIfNot tagMatches ''
    agent-appliance: image ${name}:${tag} would contain ${lib.getName versioned} ${versioned.version}
    (${match} match expected). The versions in src/generator/kinds/ (agents) or src/generator/model/image.rs, nix/sources.json and
    the pinned nixpkgs disagree; fix them and run `appliance generate`.
  '';

  # Chromium and Python look the running user up; dockerTools' fakeNss has
  # root and nobody, this adds the agent's account.
  nss = pkgs.dockerTools.fakeNss.override {
    extraPasswdLines = lib.optional (
      account.uid != 0
    ) "${account.name}:x:${toString account.uid}:${toString account.gid}:${account.name}:${account.home}:/sbin/nologin";
    extraGroupLines = lib.optional (account.gid != 0) "${account.name}:x:${toString account.gid}:";
  };

  # fakeRootCommands run in the image's root directory under fakeroot, so
  # paths are relative and chown lands in the layer, not on the builder.
  makeWritable = dir: ''
    mkdir -p .${lib.escapeShellArg dir.path}
    chown ${toString dir.uid}:${toString dir.gid} .${lib.escapeShellArg dir.path}
    chmod ${dir.mode} .${lib.escapeShellArg dir.path}
  '';
in
pkgs.dockerTools.streamLayeredImage {
  inherit name tag;
  contents = packages ++ [ nss ];
  fakeRootCommands = checked (lib.concatMapStrings makeWritable writable);
  config = {
    Entrypoint = entrypoint;
    User = "${toString account.uid}:${toString account.gid}";
    Env = env;
    Labels."org.opencontainers.image.version" = versioned.version;
  };
}
