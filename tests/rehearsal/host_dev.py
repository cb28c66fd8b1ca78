#!/usr/bin/env python3
"""Development harness: the hub's agents run directly on this host (no
gVisor, no Docker), against a real Synapse and the STAND-IN model server,
with their generated configs re-rooted to loopback and a temporary root.

    host_dev.py start --root DIR [--agents melchior,casper]
    host_dev.py stop --root DIR

`start` builds nothing: it uses target/debug/appliance (cargo build first),
the Synapse venv (.ci/venv), OpenClaw (.ci/openclaw) and Hermes
(.ci/hermes-venv). It runs `appliance bootstrap --secrets-only`, Synapse
with the generated settings (paths and listener re-rooted), the full
bootstrap, the stand-in, then each agent with its sandbox's generated
environment and env file, waits until each agent is ready, and writes
DIR/world.json (URLs, pids, logs) for tests/rehearsal/scenario.py. Every
process it starts is in its own session; `stop` ends exactly those.

What differs from the appliance, and why (host development only):
- Synapse keeps its state in SQLite, not the appliance's PostgreSQL: this
  harness starts no database server (the rehearsal proper and the
  bootstrap tests run Synapse on a real PostgreSQL, tests/synapse.rs);
- every path and address is re-rooted (container paths -> DIR/<agent>/...,
  10.88.0.1:8008 -> Synapse on loopback, Ollama's 10.88.0.2:11434 (and
  10.89.0.1:11434) -> the stand-in);
- Hermes' terminal backend is `local`: there is no code sandbox here (the
  rehearsal proper runs it in the Docker-in-gVisor sandbox);
- OpenClaw's Matrix plugin is installed from npm into its state dir at
  start (`openclaw plugins install`): a plugin loaded by path is untrusted
  and its Matrix channel refuses to start;
- Hermes runs as root (its venv's Python is under root's pyenv here),
  OpenClaw as its sandbox's uid (its file SecretRef insists on the owner);
- Chromium is Debian's /usr/bin/chromium (the images link /bin/chromium);
- no egress proxy: the sandboxes' proxy variables and Chromium's
  `--proxy-server` are left out;
- no search or extraction service: their keys' env files are left out.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CI = REPO / ".ci"
SYNAPSE_PORT_IN_SPEC = "10.88.0.1:8008"
# The hub's agents reach Ollama in its sandbox on the bridge; agents on
# other hosts over the overlay.
INFERENCE_IN_SPEC = ("10.88.0.2:11434", "10.89.0.1:11434")
# The line each agent logs once it is connected to Matrix and can answer.
OPENCLAW_VERSION = "2026.9.6"
# Lines each agent logs once it is connected to Matrix and can answer
# (all of them must appear).
READY = {
    "openclaw": ["[gateway] ready", "[matrix] rooms resolved"],
    "hermes": ["✓ matrix connected"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print("host-dev: " + msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def spawn(world, name, cmd, env, cwd, logfile, user=None):
    """Starts `cmd` in a session of its own, as `user` ("uid:gid") if given."""
    out = open(logfile, "ab")
    preexec = None
    if user and os.getuid() == 0:
        uid, gid = (int(x) for x in user.split(":"))

        def preexec():
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
    proc = subprocess.Popen([str(c) for c in cmd], env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec)
    world["pids"][name] = proc.pid
    world["logs"][name] = str(logfile)
    save(world)
    log("started %s (pid %d), log %s" % (name, proc.pid, logfile))
    return proc


def save(world):
    path = Path(world["root"]) / "world.json"
    path.write_text(json.dumps(world, indent=2, sort_keys=True))


def wait_http(url, seconds, proc=None, what=""):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise SystemExit("host-dev: %s exited with %s" % (what, proc.returncode))
        time.sleep(0.1)
    raise SystemExit("host-dev: %s not answering at %s after %d s" % (what, url, seconds))


def inspect():
    out = subprocess.run([str(REPO / "target/debug/appliance"), "inspect", "--format", "json",
                          "--spec", str(REPO / "appliance.toml")], check=True, capture_output=True)
    return json.loads(out.stdout)


def synapse_config(data, state, port):
    settings = json.loads((REPO / "generated/hosts/hub/synapse.json").read_text())
    settings["listeners"][0]["port"] = port
    settings["listeners"][0]["bind_addresses"] = ["127.0.0.1"]
    settings["public_baseurl"] = "http://127.0.0.1:%d/" % port
    # SQLite, not the generated PostgreSQL: see the docstring.
    settings["database"] = {"name": "sqlite3", "args": {"database": str(data / "homeserver.db")}}
    settings["media_store_path"] = str(data / "media")
    settings["signing_key_path"] = str(data / "signing.key")
    settings["pid_file"] = str(data / "homeserver.pid")
    settings["log_config"] = str(data / "log.yaml")
    for key in ("registration_shared_secret_path", "macaroon_secret_key_path", "form_secret_path"):
        settings[key] = settings[key].replace("/var/lib/appliance", str(state))
    (data / "log.yaml").write_text(
        "version: 1\nformatters:\n  f:\n    format: '%(asctime)s %(levelname)s %(name)s %(message)s'\n"
        "handlers:\n  file:\n    class: logging.FileHandler\n    filename: " + str(data / "homeserver.log") +
        "\n    formatter: f\nroot:\n  level: INFO\n  handlers: [file]\ndisable_existing_loggers: false\n")
    return settings


def env_file(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return env


def rewriter(world, agent, home):
    """Maps container paths and appliance addresses to this host's."""
    secrets = Path(world["state"]) / "secrets" / agent
    pairs = [
        ("http://" + SYNAPSE_PORT_IN_SPEC, world["synapse_url"]),
        *[("http://" + address, world["standin_url"]) for address in INFERENCE_IN_SPEC],
        ("/run/secrets/appliance", str(secrets)),
        ("/bin/chromium", shutil.which("chromium") or "/usr/bin/chromium"),
        ("/home/node", str(home)),
        ("/opt/data", str(home)),
        ("/etc/openclaw", str(home / "etc")),
    ]

    def rewrite(text):
        for old, new in pairs:
            text = text.replace(old, new)
        return text

    return rewrite


def agent_env(world, sandbox, rewrite, extra):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    for k, v in sandbox["environment"].items():
        # No egress proxy on the host: the agents connect directly.
        if k.lower() in ("http_proxy", "https_proxy", "no_proxy"):
            continue
        env[k] = rewrite(v)
    for path in sandbox["env_files"]:
        host = Path(path.replace("/var/lib/appliance", world["state"]))
        if not host.exists():
            # A service's key (webextract's), made by appliance-service-secrets
            # on the appliance: that service does not run here.
            print(f"host-dev: {host} does not exist, left out (its service does not run on the host)")
            continue
        env.update(env_file(host))
    env.update(extra)
    # OpenClaw writes its log under the temp dir; keep it per agent.
    env["TMPDIR"] = extra.get("TMPDIR", "")
    return env


def own(path, user):
    """Gives the agent's directory to the sandbox's uid, as its volume is."""
    if os.getuid() != 0:
        return
    uid, gid = (int(x) for x in user.split(":"))
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for f in filenames:
            os.chown(os.path.join(dirpath, f), uid, gid)


def complete_openclaw_lifecycle():
    """An install with --ignore-scripts (.ci/agents.sh) leaves
    `.openclaw-lifecycle-pending`; OpenClaw finishes it on its first run,
    which must be able to write the package directory. Run once as the
    installing user (root), not as the sandbox uid."""
    package = CI / "openclaw/node_modules/openclaw"
    if (package / ".openclaw-lifecycle-pending").exists():
        bin_dir = CI / "openclaw/node_modules/.bin"
        env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ.get("PATH", "")))
        run([bin_dir / "openclaw", "--version"], env=env)


def install_matrix_plugin(home, env, user):
    """Installs @openclaw/matrix from npm into the agent's state dir, which
    records it as the official package: OpenClaw 2026.9.6 refuses to start
    the Matrix channel of a plugin loaded from `plugins.load.paths`
    ("openKeyedStore is only available for trusted plugins"). The install
    refuses Nix mode, so it runs with a scratch config and HOME."""
    scratch = home / "plugin-install"
    scratch.mkdir(exist_ok=True)
    (scratch / "openclaw.json").write_text("{}")
    install_env = {k: v for k, v in env.items() if k not in ("OPENCLAW_NIX_MODE", "OPENCLAW_CONFIG_PATH", "HOME")}
    install_env.update({"HOME": str(scratch), "OPENCLAW_CONFIG_PATH": str(scratch / "openclaw.json")})
    for k in ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"):
        if os.environ.get(k):
            install_env[k] = os.environ[k]
    if os.environ.get("NODE_EXTRA_CA_CERTS"):
        install_env["npm_config_cafile"] = os.environ["NODE_EXTRA_CA_CERTS"]
    own(home, user)
    uid, gid = (int(x) for x in user.split(":"))
    started = time.time()
    out = subprocess.run([str(CI / "openclaw/node_modules/.bin/openclaw"), "plugins", "install", "--pin",
                          "@openclaw/matrix@%s" % OPENCLAW_VERSION], env=install_env, cwd=str(scratch),
                         capture_output=True, text=True, timeout=300,
                         user=uid if os.getuid() == 0 else None, group=gid if os.getuid() == 0 else None)
    installed = list(Path(env["OPENCLAW_STATE_DIR"]).glob("npm/projects/openclaw-matrix-*/node_modules/@openclaw/matrix"))
    if out.returncode != 0 and installed:
        # 2026.9.6 installs, then retries the spec as a hook pack, which fails
        # with "plugin already exists": the plugin itself is in place.
        log("openclaw plugins install exited %d after installing the plugin (%s)" % (out.returncode, installed[0]))
    elif out.returncode != 0:
        raise SystemExit("host-dev: openclaw plugins install failed:\n" + out.stdout[-2000:] + out.stderr[-2000:])
    log("installed @openclaw/matrix into %s in %.1f s" % (env["OPENCLAW_STATE_DIR"], time.time() - started))


def other_agents(world, name):
    return [a["user_id"] for n, a in world["agents"].items() if n != name]


def start_openclaw(world, name, sandbox):
    home = Path(world["root"]) / name
    (home / "etc").mkdir(parents=True, exist_ok=True)
    rewrite = rewriter(world, name, home)
    config = json.loads(rewrite((REPO / "generated/agents" / name / "openclaw.json").read_text()))
    config["gateway"]["port"] = free_port()
    # The test page is on a loopback/private address, which OpenClaw's
    # browser refuses by default (`browser navigation blocked by policy`);
    # allow exactly the hosts the harness serves, as the rehearsal must.
    if world.get("browse_hosts") and "browser" in config:
        config["browser"]["ssrfPolicy"] = {"allowedHostnames": world["browse_hosts"]}
    # No egress proxy here: Chromium connects directly.
    if "browser" in config:
        args = config["browser"].get("extraArgs", [])
        config["browser"]["extraArgs"] = [a for a in args if not a.startswith("--proxy-server=")]
    if world.get("unguarded"):
        matrix = config["channels"]["matrix"]
        for key in (("groupAllowFrom",), ("dm", "allowFrom")):
            holder = matrix if len(key) == 1 else matrix[key[0]]
            holder[key[-1]] = sorted(set(holder[key[-1]]) | set(other_agents(world, name)))
    config_path = home / "etc/openclaw.json"
    config_path.write_text(json.dumps(config, indent=2))
    bin_dir = CI / "openclaw/node_modules/.bin"
    (home / "tmp").mkdir(exist_ok=True)
    env = agent_env(world, sandbox, rewrite, {"OPENCLAW_CONFIG_PATH": str(config_path), "TMPDIR": str(home / "tmp")})
    env["PATH"] = "%s:%s" % (bin_dir, env["PATH"])
    env.setdefault("OPENCLAW_STATE_DIR", str(home / ".openclaw"))
    complete_openclaw_lifecycle()
    install_matrix_plugin(home, env, sandbox["user"])
    world["ready_logs"][name] = str(Path(world["root"]) / (name + ".log"))
    own(home, sandbox["user"])
    world["started_at"][name] = time.time()
    return spawn(world, name, [bin_dir / "openclaw", "gateway", "run"], env, home,
                 Path(world["root"]) / (name + ".log"), sandbox["user"])


def yaml_to_data(text):
    """Hermes' config is YAML; the standard library has no YAML parser, so
    Hermes' own venv (PyYAML) reads it. JSON is YAML, so it is written back
    as JSON."""
    out = subprocess.run([str(CI / "hermes-venv/bin/python"), "-c",
                          "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
                         input=text, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def start_hermes(world, name, sandbox):
    home = Path(world["root"]) / name
    home.mkdir(parents=True, exist_ok=True)
    rewrite = rewriter(world, name, home)
    text = rewrite((REPO / "generated/agents" / name / "config.yaml").read_text())
    config = yaml_to_data(text)
    # No code sandbox on the host: run code locally (the rehearsal runs it in gVisor).
    if config.get("terminal", {}).get("backend") == "docker":
        config["terminal"] = {"backend": "local"}
    if world.get("unguarded"):
        config["matrix"]["allowed_users"] = sorted(set(config["matrix"]["allowed_users"]) | set(other_agents(world, name)))
    (home / "config.yaml").write_text(json.dumps(config, indent=2))
    (home / "tmp").mkdir(exist_ok=True)
    env = agent_env(world, sandbox, rewrite, {"HOME": str(home), "TMPDIR": str(home / "tmp")})
    env.pop("DOCKER_HOST", None)
    if world.get("unguarded"):
        env["MATRIX_ALLOWED_USERS"] = ",".join(config["matrix"]["allowed_users"])
    hermes = CI / "hermes-venv/bin/hermes"
    env["PATH"] = "%s:%s" % (hermes.parent, env["PATH"])
    # Hermes logs INFO lines (the ready line among them) only to its own file.
    world["ready_logs"][name] = str(home / "logs/gateway.log")
    # As root: the venv's Python lives under root's pyenv, which uid 10000
    # cannot read on this machine.
    world["started_at"][name] = time.time()
    return spawn(world, name, [hermes, "gateway", "run"], env, home, Path(world["root"]) / (name + ".log"))


def wait_all_ready(world, procs, seconds):
    """Polls every agent's log at once, so each one's time is its own."""
    pending = dict(procs)
    deadline = time.time() + seconds
    while pending and time.time() < deadline:
        for name, proc in list(pending.items()):
            logfile = Path(world["ready_logs"][name])
            text = logfile.read_text(errors="replace") if logfile.exists() else ""
            kind = world["agents"][name]["kind"]
            if all(line in text for line in READY[kind]):
                took = time.time() - world["started_at"][name]
                world["ready_after_s"][name] = round(took, 2)
                save(world)
                log("%s ready %.1f s after its start (saw %r)" % (name, took, READY[kind]))
                del pending[name]
            elif proc.poll() is not None:
                raise SystemExit("host-dev: %s exited with %s; log %s:\n%s" % (
                    name, proc.returncode, logfile, text[-3000:]))
        time.sleep(0.2)
    if pending:
        raise SystemExit("host-dev: not ready after %d s: %s" % (
            seconds, ", ".join("%s (no %r in %s)" % (n, READY[world["agents"][n]["kind"]], world["ready_logs"][n])
                               for n in pending)))


def start_standin(world):
    root = Path(world["root"])
    cmd = [sys.executable, REPO / "tests/rehearsal/standin_model.py", "--port", world["standin_url"].rsplit(":", 1)[1],
           "--log", world["standin_log"]]
    for m in world["models"]:
        cmd += ["--model", m]
    cmd += ["--server-name", world.get("server_name", "magi")]
    standin = spawn(world, "standin", cmd, dict(os.environ), root, root / "standin.log")
    wait_http(world["standin_url"] + "/api/version", 10, standin, "stand-in")


def restart_standin(args):
    """Restarts only the stand-in (same port and log), e.g. after editing it."""
    world = json.loads((Path(args.root) / "world.json").read_text())
    stop_pid("standin", world["pids"]["standin"])
    start_standin(world)


def start(args):
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    world = {"root": str(root), "state": str(root / "state"), "pids": {}, "logs": {},
             "started_at": {}, "ready_after_s": {}, "ready_logs": {}, "browse_hosts": args.browse_host,
             "unguarded": args.unguarded}
    appliance = REPO / "target/debug/appliance"
    plan = REPO / "generated/bootstrap/plan.json"
    run([appliance, "bootstrap", "--plan", plan, "--state-dir", world["state"], "--secrets-only"])

    data = root / "synapse"
    data.mkdir(exist_ok=True)
    port = free_port()
    world["synapse_url"] = "http://127.0.0.1:%d" % port
    (data / "homeserver.yaml").write_text(json.dumps(synapse_config(data, Path(world["state"]), port), indent=2))
    synapse = spawn(world, "synapse", [CI / "venv/bin/python", "-m", "synapse.app.homeserver", "-c",
                                       data / "homeserver.yaml"], dict(os.environ), data, root / "synapse.log")
    wait_http(world["synapse_url"] + "/_matrix/client/versions", 90, synapse, "synapse")
    run([appliance, "bootstrap", "--plan", plan, "--state-dir", world["state"], "--homeserver", world["synapse_url"]])
    # The admin's password is stored nowhere; `appliance admin password`
    # derives it. Kept here, 0600, for scenario.py --admin-password-file.
    password = subprocess.run([str(appliance), "admin", "password", "gendo", "--plan", str(plan), "--state-dir",
                               world["state"]], check=True, capture_output=True, text=True).stdout.strip()
    password_file = root / "admin-password"
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    world["admin_password_file"] = str(password_file)
    world["registration_secret_file"] = str(Path(world["state"]) / "secrets/_host/synapse/registration-shared-secret")

    desc = inspect()
    world["standin_url"] = "http://127.0.0.1:%d" % free_port()
    world["standin_log"] = str(root / "standin-requests.jsonl")
    world["models"] = desc["inference"]["models"]
    world["server_name"] = desc["matrix"]["server_name"]
    start_standin(world)

    sandboxes = {s["name"]: s for s in desc["hosts"]["hub"]["sandboxes"]}
    names = args.agents.split(",")
    world["agents"] = {n: {"kind": desc["agents"][n]["kind"], "user_id": desc["agents"][n]["user_id"],
                           "model": desc["agents"][n]["model"]} for n in names}
    procs = {}
    for name in names:
        agent = desc["agents"][name]
        if agent["kind"] == "openclaw":
            procs[name] = start_openclaw(world, name, sandboxes[name])
        elif agent["kind"] == "hermes":
            procs[name] = start_hermes(world, name, sandboxes[name])
        else:
            raise SystemExit("host-dev: agent %s is %s, which this harness cannot run" % (name, agent["kind"]))
    wait_all_ready(world, procs, args.ready_timeout)
    save(world)
    print(json.dumps({"world": str(root / "world.json"), "ready_after_s": world["ready_after_s"]}))


def stop(args):
    path = Path(args.root) / "world.json"
    if not path.exists():
        log("nothing to stop: no %s" % path)
        return
    world = json.loads(path.read_text())
    for name, pid in sorted(world["pids"].items(), key=lambda kv: kv[0] == "synapse"):
        stop_pid(name, pid)


def stop_pid(name, pid):
    """Ends the session `spawn` started for `name`: SIGTERM, then SIGKILL."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log("stopped %s (pid %d)" % (name, pid))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start")
    p.add_argument("--root", required=True)
    p.add_argument("--agents", default="melchior,casper")
    p.add_argument("--ready-timeout", type=int, default=120)
    p.add_argument("--browse-host", action="append", default=[],
                   help="a host the browser agent may open although private (the test page's)")
    p.add_argument("--unguarded", action="store_true",
                   help="add the other agents to each agent's allowlists, as before the loop guard, to show the "
                        "loop that the guard stops (the scenario's loop step then fails)")
    p = sub.add_parser("stop")
    p.add_argument("--root", required=True)
    p = sub.add_parser("restart-standin")
    p.add_argument("--root", required=True)
    args = parser.parse_args()
    {"start": start, "stop": stop, "restart-standin": restart_standin}[args.cmd](args)


if __name__ == "__main__":
    main()
