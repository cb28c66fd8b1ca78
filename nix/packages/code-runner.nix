# The image Hermes' Docker terminal runs code in, inside the code-execution
# sandbox. The sandbox's /var/lib/docker is a tmpfs and, unless the spec sets
# `code-network`, it has no network to pull from, so the image is built here
# and loaded at start by `appliance-dind-start`. Tools for what Hermes runs:
# a shell, Python and Node.
{
  dockerTools,
  bashInteractive,
  coreutils,
  python3,
  nodejs_24,
  cacert,
}:
dockerTools.buildLayeredImage {
  # Hermes' config names this image: src/generator/model/sandbox.rs CODE_RUNNER_IMAGE.
  name = "agent-appliance/code-runner";
  tag = "1";
  contents = [
    bashInteractive
    coreutils
    python3
    nodejs_24
    cacert
  ];
  config = {
    Cmd = [ "bash" ];
    Env = [ "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt" ];
    WorkingDir = "/workspace";
  };
}
