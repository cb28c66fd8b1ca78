# Docker's daemon for code execution inside gVisor, with the code-runner
# image it loads at start (nix/packages/dind-start.nix). It runs as root in
# its sandbox; gVisor's root has no host privileges. The tag is Docker's
# major version.
{ pkgs, build }:
args:
build (
  args
  // {
    name = "agent-appliance/docker-in-gvisor";
    versioned = pkgs.docker_29;
    match = "major";
  }
)
