"""Check a generated Hermes config with Hermes' own code (0.19.0).

Hermes never rejects a config.yaml: unknown keys are ignored and bad values
fall back to defaults, so "Hermes starts" proves nothing. This script runs
the pieces of Hermes that decide what a config means and reports every
problem they find:

1. the YAML loader Hermes uses, strictly (load_config() would silently fall
   back to defaults on a parse error);
2. load_config() and validate_config_structure();
3. _validate_config_key(), the checker behind `hermes config set`, over
   every leaf of the file, plus the defaults dict of cli.load_cli_config();
   a short list of keys that Hermes reads from the raw file but that the
   checker cannot walk is accepted only with its value checked (READ_RAW);
4. toolset names with toolsets.validate_toolset();
5. the gateway's view after loading the .env (gateway.config);
6. model provider resolution (hermes_cli.runtime_provider).

Usage: HERMES_HOME=<dir with config.yaml and .env> python validate_hermes.py
Prints one JSON object; exit 0 when there is no problem, 1 otherwise.
Needs no network.
"""

import ast
import inspect
import json
import os
import sys
from pathlib import Path

home = Path(os.environ["HERMES_HOME"])

from hermes_cli.env_loader import load_hermes_dotenv  # noqa: E402

load_hermes_dotenv(hermes_home=home)  # as `hermes gateway run` does

from hermes_cli import config as hc  # noqa: E402

problems = []

try:
    with open(home / "config.yaml", encoding="utf-8") as f:
        raw = hc.fast_safe_load(f) or {}
except Exception as e:  # noqa: BLE001
    print(json.dumps({"ok": False, "problems": [{"kind": "yaml", "message": str(e)}]}))
    sys.exit(1)
if not isinstance(raw, dict):
    print(json.dumps({"ok": False, "problems": [{"kind": "yaml", "message": "top level is not a mapping"}]}))
    sys.exit(1)

cfg = hc.load_config()
for issue in hc.validate_config_structure(cfg):
    problems.append({"kind": "structure", "severity": issue.severity, "message": issue.message})

import toolsets as ts  # noqa: E402


def _platform_toolsets(value):
    from gateway.config import Platform

    platforms = {p.value for p in Platform}
    if not isinstance(value, dict):
        return "not a mapping"
    for platform, names in value.items():
        if platform not in platforms:
            return f"unknown platform {platform!r}"
        if not isinstance(names, list) or not all(ts.validate_toolset(n) for n in names):
            return f"unknown toolset in {names!r}"
    return None


def _cloud_provider(value):
    # tools/browser_tool.py::_get_cloud_provider: "local" pins local Chromium.
    return None if value == "local" else f"{value!r} is not 'local'"


# Keys Hermes 0.19.0 reads from the raw file that _validate_config_key
# cannot walk (absent from DEFAULT_CONFIG), with the reader and a check of
# the value. Anything else unknown is a problem.
READ_RAW = {
    # hermes_cli/tools_config.py::_get_platform_tools
    "platform_toolsets": _platform_toolsets,
    # tools/browser_tool.py::_get_cloud_provider
    "browser.cloud_provider": _cloud_provider,
    # gateway/config.py::_normalize_unauthorized_dm_behavior ("pair" or
    # "ignore"; anything else silently means "pair")
    "unauthorized_dm_behavior": lambda v: None if v in ("pair", "ignore") else f"{v!r} is not pair/ignore",
}


def _cli_defaults():
    import cli

    source = inspect.getsource(cli.load_cli_config)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "defaults":
            try:
                return ast.literal_eval(node.value)
            except Exception:  # noqa: BLE001
                return {}
    return {}


CLI_DEFAULTS = _cli_defaults()


def _in(tree, path):
    node = tree
    for segment in path.split("."):
        if not isinstance(node, dict) or segment not in node:
            return False
        node = node[segment]
    return True


def leaves(tree, prefix=""):
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if path in READ_RAW:
            yield path, value
        elif isinstance(value, dict) and value:
            yield from leaves(value, path)
        else:
            yield path, value


for path, value in leaves(raw):
    if path in READ_RAW:
        why = READ_RAW[path](value)
        if why:
            problems.append({"kind": "bad_value", "path": path, "message": why})
        continue
    known, suggestion = hc._validate_config_key(path)
    if not known and not _in(CLI_DEFAULTS, path):
        problems.append({"kind": "unknown_key", "path": path, "suggestion": suggestion})

for name in (cfg.get("agent") or {}).get("disabled_toolsets") or []:
    if not ts.validate_toolset(name):
        problems.append({"kind": "unknown_toolset", "name": name})

model = cfg.get("model")
if not (isinstance(model, dict) and str(model.get("default") or "").strip()):
    problems.append({"kind": "model", "message": "model.default is empty"})

# The tools the Matrix gateway would offer: platform toolsets minus
# agent.disabled_toolsets, as gateway/run.py passes them to the agent.
from hermes_cli.tools_config import _get_platform_tools  # noqa: E402

enabled = sorted(_get_platform_tools(cfg, "matrix"))
tools = set()
for name in enabled:
    tools.update(ts.resolve_toolset(name))
for name in (cfg.get("agent") or {}).get("disabled_toolsets") or []:
    tools.difference_update(ts.resolve_toolset(name))

from gateway.config import Platform, load_gateway_config  # noqa: E402

gateway = load_gateway_config()
m = gateway.platforms.get(Platform.MATRIX)
matrix = None
if m is not None:
    matrix = {
        "enabled": m.enabled,
        "token_set": bool(m.token),
        "extra": {k: v for k, v in m.extra.items() if k != "password"},
    }
else:
    problems.append({"kind": "matrix", "message": "the gateway sees no Matrix platform"})

runtime = None
try:
    from hermes_cli.runtime_provider import resolve_runtime_provider

    r = resolve_runtime_provider()
    runtime = {k: r.get(k) for k in ("provider", "base_url", "api_mode")}
except Exception as e:  # noqa: BLE001
    problems.append({"kind": "provider", "message": f"{type(e).__name__}: {e}"})

print(
    json.dumps(
        {
            "ok": not problems,
            "problems": problems,
            "model": cfg.get("model"),
            "runtime": runtime,
            "terminal": cfg.get("terminal"),
            "matrix": matrix,
            "matrix_toolsets": enabled,
            "matrix_tools": sorted(tools),
            "unauthorized_dm_behavior": gateway.get_unauthorized_dm_behavior(Platform.MATRIX),
            "env": {
                k: os.environ.get(k)
                for k in ("MATRIX_ALLOWED_USERS", "MATRIX_ALLOWED_ROOMS", "MATRIX_REQUIRE_MENTION")
            },
        },
        indent=1,
        default=str,
    )
)
sys.exit(0 if not problems else 1)
