# `nix develop`: what the README's commands and .ci/run need.
{ pkgs }:
pkgs.mkShell {
  inputsFrom = [ pkgs.agent-appliance ];
  packages = [
    pkgs.cargo
    pkgs.clippy
    pkgs.rustfmt
    pkgs.nixfmt
    pkgs.nix
    pkgs.gvisor
    pkgs.docker
  ];
}
