# NixOS VM test: the rehearsal's scenario on the real appliance. The Matrix
# host's configuration (the flake's module with the generated host, as
# hub-node.nix changes it for a VM) boots with the real images Nix builds
# (OpenClaw, PicoClaw, Hermes, Docker-in-gVisor, SearXNG, webextract) under the
# generated runsc runtimes with gVisor's netstack, real Synapse and the real
# bootstrap. Only the inference sandbox's image is replaced: by one of the
# same name and tag whose `ollama serve` is the STAND-IN model server
# (tests/rehearsal/standin_model.py; a stand-in, not a model), as the
# rehearsal does. Then the rehearsal's own client, tests/rehearsal/scenario.py,
# acts as the human admin and fails the check on any failed step.
# docs/rehearsal.md says what differs from the rehearsal and why.
{
  pkgs,
  lib,
  generated,
  host,
  appliance,
}:
let
  hostFacts = generated.hosts.${host};
  plan = lib.importJSON ../../generated/bootstrap/plan.json;
  serverName = plan.homeserver.server_name;

  inference =
    if (hostFacts.inference.sandbox or null) != null then
      hostFacts.inference
    else
      throw "agent-appliance: the scenario VM test replaces the inference sandbox's image with the stand-in model server; host `${host}` runs no Ollama sandbox (no [inference] on it, or `sandbox = \"host\"`).";

  # The image the inference sandbox runs, `name:tag`, and the generated
  # description that builds it (generated/images/<name>.json).
  reference = builtins.match "(.*):([^:/]+)" hostFacts.sandboxes.${inference.sandbox};
  imageName = lib.elemAt reference 0;
  imageTag = lib.elemAt reference 1;
  imageFile = baseNameOf imageName;

  images = import ../../images { inherit pkgs lib; };

  # STAND-IN for Ollama: `ollama serve`, the image's entry point, runs the
  # stand-in model server where OLLAMA_HOST (the generated environment)
  # says, serving the spec's models by name and logging every request into
  # the model volume.
  standinOllama =
    logFile:
    pkgs.writeShellApplication {
      name = "ollama";
      runtimeInputs = [ pkgs.python3 ];
      text = ''
        # STAND-IN for Ollama in the NixOS VM test (not a model server).
        if [ "''${1:-}" != serve ]; then
          echo "stand-in ollama: only 'serve'" >&2
          exit 2
        fi
        hostport=''${OLLAMA_HOST:-0.0.0.0:11434}
        exec python3 ${../../tests/rehearsal/standin_model.py} \
          --listen="''${hostport%:*}" --port="''${hostport##*:}" \
          --log=${logFile} --server-name=${serverName} \
          ${lib.concatMapStringsSep " " (model: "--model=${model}") inference.models}
      '';
    };

  # The inference image's own description (account, writable directories,
  # entry point, environment): what generated/images/<name>.json gives
  # images/<name>.nix, taken as it is.
  imageArgs = images.argsOf generated.images.${imageFile}.file;
  # Ollama's home is the model volume: the stand-in logs there.
  modelHome = imageArgs.account.home;
  standinLog = "standin-requests.jsonl";
  # That description built by images/build.nix under the same name and
  # tag, with the stand-in in place of Ollama. Its version label says
  # `stand-in`.
  standinImage = images.build (
    imageArgs
    // {
      name = imageName;
      tag = imageTag;
      packages = [
        (standinOllama "${modelHome}/${standinLog}")
        pkgs.cacert
      ];
      versioned = {
        name = "stand-in-model-server";
        version = "stand-in";
      };
      match = "none";
    }
  );

  # What the models unit (modules/models.nix) does instead of pulling (the
  # stand-in has no models to download): wait for the inference sandbox as
  # pull-models.sh does, then require every model of the spec in its list.
  modelsListed = pkgs.writeShellApplication {
    name = "appliance-models-standin";
    runtimeInputs = [
      pkgs.curl
      pkgs.jq
      pkgs.coreutils
    ];
    text = ''
      url=${inference.url}
      for _ in $(seq 1 120); do
        curl -fsS "$url/api/version" >/dev/null 2>&1 && break
        sleep 1
      done
      tags=$(curl -fsS "$url/api/tags")
      for model in ${lib.concatStringsSep " " inference.models}; do
        # Double quotes: shellcheck (writeShellApplication) flags `$` in
        # single quotes.
        if ! jq -e --arg model "$model" "any(.models[]; .name == \$model)" <<<"$tags" >/dev/null; then
          echo "appliance: the stand-in at $url does not serve $model: $tags" >&2
          exit 1
        fi
        echo "appliance: model $model is served (stand-in)"
      done
    '';
  };

  # Who and where, as the bootstrap made them (generated/bootstrap/plan.json).
  agentNames = lib.attrNames hostFacts.agents;
  accountOf =
    name:
    lib.findFirst (account: account.localpart == name) (throw "agent-appliance: no account `${name}` in the plan") plan.accounts;
  admin = lib.findFirst (account: account.kind == "admin") (throw "agent-appliance: the plan has no admin") plan.accounts;
  room =
    lib.findFirst
      (room: lib.all (user: lib.elem user room.members) ([ admin.user_id ] ++ map (name: (accountOf name).user_id) agentNames))
      (throw "agent-appliance: no room of the plan has the admin and every agent of `${host}`; the scenario needs one")
      plan.rooms;
  codeAgent = lib.findFirst (name: hostFacts.agents.${name}.code) null agentNames;
  # Its code runs only after an admin's approval (the plan's
  # `code_approval`, `approve = ["code-execution"]` by default): the
  # scenario's code step approves the warden's card in the ops room.
  codeApproval = codeAgent != null && (accountOf codeAgent).code_approval or null != null;

  # The browse step's page, on "the internet" as in the rehearsal
  # (docs/rehearsal.md): a globally routable address from the AS112 block
  # (RFC 7534, a sink that serves no web site) on the VM's loopback. The VM
  # has no route out, so no packet to it leaves; squid's deny list and the
  # agents' own private-address checks run unmodified, and the sandboxes
  # reach it only through the egress proxy. The browser agent is an
  # OpenClaw one where there is one (the kind the rehearsal proves).
  browserAgents = lib.filter (name: hostFacts.agents.${name}.browser) agentNames;
  browserAgent = lib.findFirst (name: hostFacts.agents.${name}.kind == "openclaw") (
    if browserAgents == [ ] then null else lib.head browserAgents
  ) browserAgents;
  webAddress = "192.31.196.80";
  pageTitle = "VM test page 5c1e";

  # The rehearsal's steps (tests/rehearsal/main.rs).
  steps = [
    "joined"
    "mention"
    "unmentioned"
    "stranger"
  ]
  ++ lib.optional (codeAgent != null) "code"
  ++ lib.optional (browserAgent != null) "browse"
  ++ lib.optional (lib.length agentNames >= 2) "loop";

  # The warden's step (scenario.py --step=warden, docs/warden.md): the
  # code agent is halted and resumed; it and a second agent (the browser
  # agent where there is one) loop with their own accounts and are muted
  # at the plan's budget; the second is killed and must be one notice in
  # the ops room. Files as the bootstrap and the warden make them.
  loopPartner =
    if browserAgent != null && browserAgent != codeAgent then
      browserAgent
    else
      lib.findFirst (name: name != codeAgent) null agentNames;
  warden =
    if codeAgent == null || loopPartner == null then
      null
    else
      {
        opsRoom = plan.ops_room.alias;
        tokenFile = "${plan.state_dir}/${plan.bootstrap_account.secrets_dir}/matrix-token";
        auditFile = "${plan.state_dir}/warden/audit.jsonl";
        loopBudget = plan.loop_budget or 8;
        loopAgents = [
          codeAgent
          loopPartner
        ];
        agentTokens = lib.genAttrs [
          codeAgent
          loopPartner
        ] (name: "${plan.state_dir}/${(accountOf name).secrets_dir}/matrix-token");
        kill = [ loopPartner ];
      };

  # What the test script needs, as JSON in the script (tests/flake.rs reads
  # it back from there).
  facts = builtins.toJSON {
    inherit
      steps
      warden
      codeAgent
      codeApproval
      browserAgent
      webAddress
      pageTitle
      ;
    agents = lib.mapAttrs (
      name: agent:
      if agent.model != null then agent.model else throw "agent-appliance: agent `${name}` has no model for the stand-in to serve"
    ) hostFacts.agents;
    sandboxes = lib.attrNames hostFacts.sandboxes;
    inferenceSandbox = inference.sandbox;
    inherit modelHome standinLog;
    homeserver = plan.homeserver.url;
    inherit serverName;
    room = room.alias;
    admin = admin.localpart;
    registrationSecret = "${plan.state_dir}/${plan.synapse.dir}/${plan.synapse.registration_shared_secret}";
    python = pkgs.python3.interpreter;
    scenario = "${../../tests/rehearsal/scenario.py}";
  };
in
pkgs.testers.runNixOSTest {
  name = "appliance-${host}-scenario";
  # Boot and image loads take minutes (OpenClaw's and Hermes' images carry
  # Chromium), agents up to FIRST_ANSWER below, the scenario up to 15
  # minutes of bounded waits (scenario.py's defaults: join 60 s, replies
  # 120 s, code 180 s, quiet 15 s, loop window 30 s), then the warden's.
  # The warden's step adds up to 20 minutes (a killed agent's restart
  # within FIRST_ANSWER among them).
  globalTimeout = 80 * 60;
  nodes.machine =
    { lib, ... }:
    {
      imports = [ (import ./hub-node.nix { inherit appliance generated host; }) ];

      # Memory: every sandbox's sentry and application at once, measured
      # nowhere yet, estimated: OpenClaw's gateway 1-1.5 GiB (Chromium when
      # it browses), Hermes 0.5-1 GiB, the inner dockerd with the
      # code-runner image in its tmpfs and a container 0.5-1 GiB, SearXNG and webextract,
      # Synapse, squid, dockerd and containerd about 1 GiB together,
      # PicoClaw and the stand-in little; 8 GiB leaves room for the page
      # cache of the image layers. Cores: 4, a GitHub runner's count (more
      # only slows QEMU down); `--cpus` above it is clamped (hub-node.nix).
      # Disk: the seven images unpacked in Docker's overlay2 (about 5 GB)
      # plus `docker load`'s copy while each loads.
      virtualisation = {
        memorySize = 8192;
        diskSize = 20480;
        cores = 4;
      };

      virtualisation.oci-containers.containers = lib.genAttrs [ inference.sandbox ] (_name: {
        imageStream = lib.mkForce standinImage;
      });

      # The models unit (modules/models.nix) pulls each model through
      # Ollama's API (modules/pull-models.sh, `POST /api/pull`):
      # there is nothing to download for the stand-in and no outside
      # network. Only that is replaced: the unit still waits for the
      # sandbox and still fails unless every model of the spec is served,
      # so appliance-ready.target keeps its meaning.
      systemd.services.appliance-models.serviceConfig.ExecStart = lib.mkForce (lib.getExe modelsListed);
    };

  testScript = ''
    ${import ./hub-boot-checks.nix { inherit lib generated host; }}

    import shlex
    import time

    facts = json.loads(r"""${facts}""")
    agents = facts["agents"]
    # Start of an agent's container to its first answer: measured in the
    # rehearsal (2 shared vCPUs) up to 49 s for OpenClaw and 84 s after a
    # kill -9; the rehearsal allows 300 s, a nested VM gets twice that.
    FIRST_ANSWER = 600

    machine.wait_for_unit("appliance-models.service")
    machine.wait_for_unit("appliance-ready.target")

    machine.succeed("install -d -m 0700 /root/scenario")
    machine.succeed(f"umask 077; appliance admin password {facts['admin']} > /root/scenario/admin-password")
    # The stand-in's request log, in the inference sandbox's model volume.
    volume = machine.succeed(
        "docker inspect --format '{{range .Mounts}}{{if eq .Destination \"" + facts["modelHome"] + "\"}}{{.Source}}{{end}}{{end}}' "
        + facts["inferenceSandbox"]
    ).strip()
    assert volume, "the inference sandbox has no volume at " + facts["modelHome"]
    standin_log = volume + "/" + facts["standinLog"]

    # Each agent's output as a file, for the loop step's rate-limit check.
    for name in agents:
        machine.succeed(
            f"systemd-run --unit=scenario-log-{name} --property=StandardOutput=file:/root/scenario/{name}.log"
            + f' --property=StandardError=inherit "$(command -v docker)" logs --follow {name}'
        )

    base = [
        facts["python"], facts["scenario"],
        "--homeserver=" + facts["homeserver"],
        "--server-name=" + facts["serverName"],
        "--room=" + facts["room"],
        "--admin=" + facts["admin"],
        "--admin-password-file=/root/scenario/admin-password",
        "--registration-secret-file=" + facts["registrationSecret"],
        "--standin-log=" + standin_log,
    ] + [f"--agent={name}={model}" for name, model in sorted(agents.items())]


    def report():
        out = machine.execute("docker ps -a; tail -n 20 " + shlex.quote(standin_log))[1]
        for name in facts["sandboxes"]:
            out += f"\n--- {name}\n" + machine.execute(f"journalctl -u docker-{name}.service -n 40 --no-pager")[1]
        return out


    # An agent that is still starting misses messages: mention every agent
    # until each answers through the stand-in (the rehearsal's first answer).
    started = time.monotonic()
    while True:
        status, out = machine.execute(shlex.join(base + ["--step=mention", "--reply-timeout=30"]) + " 2>&1")
        if status == 0:
            print(f"every agent answered a mention after {time.monotonic() - started:.0f} s")
            break
        if time.monotonic() - started > FIRST_ANSWER:
            raise Exception(f"not every agent answered a mention within {FIRST_ANSWER} s:\n{out}\n{report()}")
        time.sleep(5)

    scenario = base + [f"--agent-log={name}=/root/scenario/{name}.log" for name in sorted(agents)]
    scenario += ["--loop-agents=" + ",".join(sorted(agents)), "--json=/root/scenario/results.json"]
    if facts["codeAgent"]:
        scenario.append("--code-agent=" + facts["codeAgent"])
    if facts["codeApproval"]:
        scenario.append("--approve-code")
    if facts["browserAgent"]:
        # The test page on "the internet" (webAddress above), served by the
        # VM itself.
        page = f"<!doctype html><html><head><title>{facts['pageTitle']}</title></head><body><h1>{facts['pageTitle']}</h1></body></html>"
        machine.succeed("ip addr add " + facts["webAddress"] + "/32 dev lo")
        machine.succeed("install -d /root/page && printf '%s\\n' " + shlex.quote(page) + " > /root/page/index.html")
        machine.succeed(
            "systemd-run --unit=scenario-web " + shlex.join([facts["python"], "-m", "http.server", "80",
                                                             "--bind", facts["webAddress"], "--directory", "/root/page"])
        )
        machine.wait_for_open_port(80, facts["webAddress"])
        scenario += [
            "--browser-agent=" + facts["browserAgent"],
            "--page-url=http://" + facts["webAddress"] + "/index.html",
            "--page-title=" + facts["pageTitle"],
        ]
    scenario += ["--step=" + step for step in facts["steps"]]
    status, _ = machine.execute(shlex.join(scenario) + " >/dev/null 2>/root/scenario/scenario.log", timeout=15 * 60)
    print(machine.execute("cat /root/scenario/scenario.log")[1])
    print(machine.execute("cat /root/scenario/results.json")[1])
    if status != 0:
        raise Exception(f"scenario.py failed (exit {status}); its checks are above\n{report()}")

    # The warden (modules/warden.nix), outside every sandbox: status, refused
    # commands, halt and resume, the loop breaker, a kill's notice, the audit
    # trail (scenario.py --step=warden; the rehearsal runs the same step).
    if facts["warden"]:
        w = facts["warden"]
        machine.wait_for_unit("appliance-warden.service")
        step = base + [
            "--step=warden",
            "--code-agent=" + facts["codeAgent"],
            "--loop-agents=" + ",".join(w["loopAgents"]),
            "--ops-room=" + w["opsRoom"],
            "--warden-token-file=" + w["tokenFile"],
            "--audit-file=" + w["auditFile"],
            "--appliance=appliance",
            f"--loop-budget={w['loopBudget']}",
            "--kill-command=docker kill --signal=KILL {name}",
            f"--restart-timeout={FIRST_ANSWER}",
            "--json=/root/scenario/warden.json",
        ] + [f"--agent-token={name}={path}" for name, path in sorted(w["agentTokens"].items())]
        step += [f"--kill={name}" for name in w["kill"]]
        status, _ = machine.execute(shlex.join(step) + " >/dev/null 2>/root/scenario/warden.log", timeout=20 * 60)
        print(machine.execute("cat /root/scenario/warden.log")[1])
        if status != 0:
            raise Exception(f"scenario.py --step=warden failed (exit {status}); its checks are above\n{report()}")
  '';
}
