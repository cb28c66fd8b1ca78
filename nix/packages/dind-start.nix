# Entry point of the code-execution sandbox: starts dockerd with the flags
# the generated run options pass, waits for its socket ($DOCKER_HOST), loads
# the code-runner image (nothing can be pulled without `code-network`), then
# stays in the foreground with dockerd.
{
  writeShellApplication,
  docker_29,
  coreutils,
  appliance-code-runner,
}:
writeShellApplication {
  name = "appliance-dind-start";
  runtimeInputs = [
    docker_29
    coreutils
  ];
  text = ''
    dockerd "$@" &
    daemon=$!
    for _ in $(seq 1 150); do
      docker info >/dev/null 2>&1 && break
      kill -0 "$daemon" 2>/dev/null || wait "$daemon"
      sleep 0.2
    done
    docker load --input ${appliance-code-runner}
    wait "$daemon"
  '';
}
