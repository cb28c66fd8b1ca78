# A tiny busybox image under a real image's name and tag, so the generated
# unit loads and runs it in its place; it runs `entrypoint`.
pkgs: image: entrypoint:
let
  parts = builtins.match "(.*):([^:/]+)" image;
in
pkgs.dockerTools.streamLayeredImage {
  name = builtins.elemAt parts 0;
  tag = builtins.elemAt parts 1;
  contents = [ pkgs.busybox ];
  config.Entrypoint = entrypoint;
}
