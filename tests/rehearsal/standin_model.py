#!/usr/bin/env python3
"""A STAND-IN model server for the rehearsal and the NixOS VM test: NOT a model.

It answers the parts of Ollama's native API and of the OpenAI-compatible API
that the appliance's agents call (OpenClaw: Ollama's /api/*; Hermes: /v1/*),
with deterministic, scripted replies, so the whole appliance can run where
there is no GPU and no real model. Every reply it writes starts with
"[stand-in]". Python 3 standard library only (it must run in the NixOS VM
test too).

Endpoints: GET /api/tags, POST /api/show, POST /api/chat (NDJSON stream or
one JSON object), GET /api/version, GET /v1/models, POST /v1/chat/completions
(SSE stream or one JSON object).

The script (trigger words are matched in the last user message the agent
sends, wherever the agent's own wrapping puts them):

  plain message         -> "[stand-in] model <model> answers <tag>", where
                           <tag> echoes the message's `tag-` token (letters and digits);
                           a turn of several messages (an agent folding
                           what came in while it was busy into one turn,
                           as PicoClaw's steering does) gets every tag,
                           as a model answers every question it is asked
  "run code"            -> a tool call to the agent's terminal tool (Hermes
                           `terminal`) running
                           echo computed $((6*7*1000+1)) (or a Python
                           print for `execute_code`);
                           once the tool result comes back, a reply that
                           carries the tool's output verbatim
  "run gh"              -> a call to PicoClaw's `exec` tool running
                           `gh --version` ("run gh api": `gh api user
                           --jq .login`); then a reply carrying its output
  "read page <url>"     -> browser tool calls (OpenClaw `browser`, directly
                           or through `tool_call`: action open with
                           targetUrl, then snapshot; Hermes
                           `browser_navigate` then `browser_snapshot`);
                           then a reply carrying the page title found in
                           the tool results
  "remember word-X is fact-Y"
                        -> with a `memory` tool offered (Hermes), a call
                           storing "word-X is fact-Y" (action add, target
                           memory); once the result comes back, a reply
                           saying so with the tool's answer; without one,
                           "was told ... (no memory tool was offered)"
  "recall word-X"       -> "recalls word-X is fact-Y (from its system
                           prompt)" when the system prompt says "word-X is
                           fact-Y" (Hermes' memory is there), else "(from
                           earlier turns)" when an earlier message does,
                           else "has no memory of word-X"
  "loop_a_b..."         -> a reply that names the next agent of the ring
                           (b) and carries the rotated ring on, so two agents
                           that answer each other would ping-pong for ever:
                           what the appliance's loop guard must stop

A request log (JSON lines, --log) records, per request: the endpoint, the
model, the agent's last user message, the tool names offered, and what the
stand-in returned (text or tool calls). The full `tools` array is logged
the first time each (model, tool names) set is seen.
"""

import argparse
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "[stand-in]"
VERSION = "0.0.0-standin"
# The program the code tool runs: the shell computes the number, so the
# output is not in the command text. Not `python3 -c`: Hermes flags
# "script execution via -c" as dangerous and waits for an approval that no
# one gives (on its local backend, and on docker with host mounts).
CODE_COMMAND = "echo computed $((6*7*1000+1))"
CODE_PROGRAM = "print('computed', 6*7*1000+1)"  # for a Python-only code tool
CODE_OUTPUT = "computed 42001"
# The Matrix server name for full user IDs in loop replies (--server-name);
# without it, the first one seen in the conversation. Hermes strips its own
# ID from what it forwards, and OpenClaw takes no bare name as a mention.
SERVER_NAME = None

MXID_RE = re.compile(r"@[a-z0-9._=/-]+:([A-Za-z0-9.-]+(?::[0-9]+)?)")
TAG_RE = re.compile(r"\btag-[A-Za-z0-9]+\b")
READ_RE = re.compile(r"read page (\S+)", re.IGNORECASE)
# A fact told to an agent and asked for later: the answer comes only from
# what the agent sends (its earlier turns, or its system prompt, where
# Hermes puts its memory), so it proves the agent kept it.
REMEMBER_RE = re.compile(r"\bremember (word-[A-Za-z0-9]+) is (fact-[A-Za-z0-9]+)\b")
RECALL_RE = re.compile(r"\brecall (word-[A-Za-z0-9]+)\b")
# The fact as the stand-in stores it in a memory tool, and as any earlier
# message may carry it.
FACT_RE = re.compile(r"\b(word-[A-Za-z0-9]+) is (fact-[A-Za-z0-9]+)\b")
# Names joined by "_" (a word character), so the trigger itself does not
# name the other agents as words (Hermes takes a bare `\bcasper\b` as a
# mention); only the replies do.
LOOP_RE = re.compile(r"\bloop_([A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)+)")
TITLE_RES = [
    re.compile(r"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL),
    re.compile(r'"title"\s*:\s*"((?:[^"\\]|\\.)*)"'),
    re.compile(r'\\"title\\"\s*:\s*\\"(.*?)\\"'),  # JSON inside a JSON string
    re.compile(r"^\s*(?:Page )?[Tt]itle:\s*(.+)$", re.MULTILINE),
    re.compile(r"\bdocument\s+\"([^\"]+)\""),
]


# ---------------------------------------------------------------- the script


def text_of(content):
    """The text of a message's content (a string, or OpenAI content parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                parts.append(str(part.get("text") or part.get("content") or ""))
            else:
                parts.append(str(part))
        return "\n".join(parts)
    return str(content)


CONTEXT_BLOCK = re.compile(r"<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>.*?<<<END_OPENCLAW_INTERNAL_CONTEXT>>>", re.DOTALL)


def context_only(message):
    """OpenClaw repeats a user message holding only its internal context
    block after each tool result; that is not the human's turn."""
    return not CONTEXT_BLOCK.sub("", text_of(message.get("content"))).strip()


def last_user_index(messages):
    """The last user message the human wrote (a context-only one counts
    only when there is nothing else)."""
    fallback = -1
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            if not context_only(messages[i]):
                return i
            if fallback < 0:
                fallback = i
    return fallback


def user_turn(messages, last):
    """The text of the user's turn ending at `last`: OpenClaw sends the
    human's message and then its own context block as two user messages."""
    if last < 0:
        return ""
    while last + 1 < len(messages) and messages[last + 1].get("role") == "user":
        last += 1
    first = last
    while first > 0 and messages[first - 1].get("role") == "user":
        first -= 1
    return "\n".join(text_of(m.get("content")) for m in messages[first : last + 1])


def all_text(messages):
    """Every message's text, newest first."""
    return [text_of(m.get("content")) for m in reversed(messages)]


def tool_names(tools):
    names = []
    for tool in tools or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name"):
            names.append(function["name"])
        elif isinstance(tool, dict) and tool.get("name"):
            names.append(tool["name"])
    return names


def tool_calls_since(messages, start):
    """(name, arguments) of the assistant's tool calls after `start`, with
    the tool results that answered them, in order."""
    calls = []
    results = []
    for message in messages[start + 1 :]:
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                args = function.get("arguments")
                if isinstance(args, str):
                    try:
                        args = json.loads(args)
                    except ValueError:
                        args = {"_raw": args}
                calls.append((function.get("name", ""), args or {}))
        elif message.get("role") == "tool":
            results.append(text_of(message.get("content")))
    return calls, results


def tool_output(result):
    """The output a terminal tool reported: Hermes returns JSON with an
    `output` field; anything else is passed on as it came."""
    try:
        value = json.loads(result)
    except ValueError:
        return result.strip()
    if isinstance(value, dict):
        for key in ("output", "stdout", "result"):
            if isinstance(value.get(key), str):
                return value[key].strip()
    return result.strip()


def find_title(text):
    for pattern in TITLE_RES:
        for match in pattern.finditer(text):
            if match.group(1).strip():
                return match.group(1).strip()
    return None


class Reply:
    """What the stand-in answers: text, or tool calls (name, arguments)."""

    def __init__(self, text=None, tool_calls=None, rule="plain"):
        self.text = text
        self.tool_calls = tool_calls or []
        self.rule = rule


def pick_code_tool(names):
    if "terminal" in names:
        return "terminal", {"command": CODE_COMMAND}
    if "execute_code" in names:
        return "execute_code", {"code": CODE_PROGRAM}
    if "exec" in names:
        return "exec", {"command": CODE_COMMAND}
    return None


def browser_steps(names, url):
    """The browser tool calls for `url`, in order, for the tools offered."""
    # OpenClaw: one `browser` tool with an `action`; 2026.9.6 offers it
    # behind its tool search, called through `tool_call`.
    # `open` reports the tab before the page loaded (empty title); the
    # snapshot has the content but no title; `tabs` lists the loaded title.
    openclaw = [{"action": "open", "targetUrl": url}, {"action": "snapshot"}, {"action": "tabs"}]
    if "browser" in names:
        return [("browser", args) for args in openclaw]
    if "tool_call" in names:
        return [("tool_call", {"id": "browser", "args": args}) for args in openclaw]
    if "browser_navigate" in names:  # Hermes
        steps = [("browser_navigate", {"url": url})]
        if "browser_snapshot" in names:
            steps.append(("browser_snapshot", {}))
        return steps
    return None


# OpenClaw's browser tool, when a call times out (its first `open` starts
# Chromium, which in gVisor on a loaded machine can take longer than the
# tool's 15 s): "... This may be a transient browser error. Retry the
# browser tool once."
RETRY_RE = re.compile(r"Retry the browser tool once")


def next_browser_step(steps, results):
    """The index of the next browser call, or None when all have results.
    A call whose result asks for a retry is made once more, as the tool's
    message tells the model (once in all)."""
    done, retried = 0, False
    for result in results:
        if not retried and RETRY_RE.search(result):
            retried = True
            continue
        done += 1
    return done if done < len(steps) else None


def script(model, messages, tools):
    """The stand-in's whole behaviour: deterministic in its inputs."""
    names = tool_names(tools)
    start = last_user_index(messages)
    user = user_turn(messages, start)
    calls, results = tool_calls_since(messages, start)

    if re.search(r"\brun gh\b", user, re.IGNORECASE):
        # PicoClaw's exec tool (0.2.9 wants an `action`); `gh` is the
        # GitHub skill's CLI, in its image.
        if "exec" not in names:
            return Reply("%s model %s: asked to run gh, but no exec tool was offered (tools: %s)"
                         % (PREFIX, model, ", ".join(names) or "none"), rule="run-gh-no-tool")
        command = "gh api user --jq .login" if re.search(r"\brun gh api\b", user, re.IGNORECASE) \
            else "gh --version"
        if not results:
            return Reply(tool_calls=[("exec", {"action": "run", "command": command})],
                         rule="run-gh-call")
        return Reply("%s model %s ran gh; its output: %s"
                     % (PREFIX, model, tool_output(results[-1])), rule="run-gh-result")

    if re.search(r"\brun code\b", user, re.IGNORECASE):
        chosen = pick_code_tool(names)
        if not chosen:
            return Reply("%s model %s: asked to run code, but no code tool was offered (tools: %s)"
                         % (PREFIX, model, ", ".join(names) or "none"), rule="run-code-no-tool")
        if not results:
            return Reply(tool_calls=[chosen], rule="run-code-call")
        return Reply("%s model %s ran the program; its output: %s"
                     % (PREFIX, model, tool_output(results[-1])), rule="run-code-result")

    read = READ_RE.search(user)
    if read:
        url = read.group(1).rstrip(".,;)>\"'")
        steps = browser_steps(names, url)
        if not steps:
            return Reply("%s model %s: asked to read %s, but no browser tool was offered (tools: %s)"
                         % (PREFIX, model, url, ", ".join(names) or "none"), rule="read-page-no-tool")
        step = next_browser_step(steps, results)
        if step is not None:
            return Reply(tool_calls=[steps[step]], rule="read-page-call-%d" % step)
        title = None
        for result in reversed(results):
            title = find_title(result)
            if title:
                break
        if title:
            return Reply("%s model %s read %s; page title: %s" % (PREFIX, model, url, title),
                         rule="read-page-result")
        return Reply("%s model %s read %s but found no title; last tool result: %s"
                     % (PREFIX, model, url, results[-1][:500]), rule="read-page-no-title")

    remember = REMEMBER_RE.search(user)
    if remember:
        fact = "%s is %s" % (remember.group(1), remember.group(2))
        if "memory" not in names:
            return Reply("%s model %s was told %s (no memory tool was offered)" % (PREFIX, model, fact),
                         rule="remember-no-tool")
        if not results:
            # Hermes' `memory` tool: the entry goes to MEMORY.md, which
            # Hermes puts into the system prompt of its later sessions.
            return Reply(tool_calls=[("memory", {"action": "add", "target": "memory", "content": fact})],
                         rule="remember-call")
        return Reply("%s model %s stored %s in its memory; the tool said: %s"
                     % (PREFIX, model, fact, results[-1].strip()[:300]), rule="remember-result")

    recall = RECALL_RE.search(user)
    if recall:
        word = recall.group(1)
        # Where the fact is found: the system prompt (a memory the agent
        # put there), else the earlier turns of the conversation.
        system = [text_of(m.get("content")) for m in messages[:max(start, 0)] if m.get("role") == "system"]
        earlier = [text_of(m.get("content")) for m in messages[:max(start, 0)] if m.get("role") != "system"]
        for where, texts in (("its system prompt", system), ("earlier turns", earlier)):
            facts = [m.group(2) for text in texts for m in FACT_RE.finditer(text) if m.group(1) == word]
            if facts:
                return Reply("%s model %s recalls %s is %s (from %s)" % (PREFIX, model, word, facts[-1], where),
                             rule="recall")
        return Reply("%s model %s has no memory of %s" % (PREFIX, model, word), rule="recall-none")

    loop = LOOP_RE.search(user)
    if loop:
        ring = loop.group(1).split("_")
        nxt = ring[1:] + ring[:1]
        # A full user ID when the trigger shows the server name, so both
        # agents' Matrix adapters see a real mention.
        server = SERVER_NAME or next((m.group(1) for m in map(MXID_RE.search, all_text(messages)) if m), None)
        target = "@%s:%s" % (ring[1], server) if server else ring[1]
        return Reply("%s model %s: %s, your turn: loop_%s" % (PREFIX, model, target, "_".join(nxt)), rule="loop")

    tags = list(dict.fromkeys(TAG_RE.findall(user)))
    return Reply("%s model %s answers %s" % (PREFIX, model, ", ".join(tags) if tags else "(no tag)"),
                 rule="plain")


# ------------------------------------------------------------- wire formats


def call_id(model, index, name, args):
    digest = hashlib.sha256(json.dumps([model, index, name, args], sort_keys=True).encode()).hexdigest()
    return "call_standin_" + digest[:16]


def now_iso():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def chunks_of(text, size=24):
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def ollama_tool_calls(reply, model):
    return [
        {"id": call_id(model, i, name, args), "function": {"index": i, "name": name, "arguments": args}}
        for i, (name, args) in enumerate(reply.tool_calls)
    ]


def openai_tool_calls(reply, model):
    return [
        {
            "index": i,
            "id": call_id(model, i, name, args),
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
        for i, (name, args) in enumerate(reply.tool_calls)
    ]


def ollama_final(model, reply, prompt_tokens, completion_tokens):
    return {
        "model": model,
        "created_at": now_iso(),
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 1000000,
        "load_duration": 1000,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": 1000,
        "eval_count": completion_tokens,
        "eval_duration": 1000,
    }


def ollama_messages(model, reply, prompt_tokens, completion_tokens):
    """The NDJSON lines of a streamed /api/chat answer."""
    lines = []
    if reply.tool_calls:
        lines.append({"model": model, "created_at": now_iso(), "done": False,
                      "message": {"role": "assistant", "content": "",
                                  "tool_calls": ollama_tool_calls(reply, model)}})
    else:
        for piece in chunks_of(reply.text):
            lines.append({"model": model, "created_at": now_iso(), "done": False,
                          "message": {"role": "assistant", "content": piece}})
    lines.append(ollama_final(model, reply, prompt_tokens, completion_tokens))
    return lines


def ollama_whole(model, reply, prompt_tokens, completion_tokens):
    body = ollama_final(model, reply, prompt_tokens, completion_tokens)
    body["message"] = {"role": "assistant", "content": reply.text or ""}
    if reply.tool_calls:
        body["message"]["tool_calls"] = ollama_tool_calls(reply, model)
    return body


def openai_chunks(model, reply, completion_id, prompt_tokens, completion_tokens, include_usage):
    created = int(time.time())

    def chunk(delta, finish=None):
        return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "standin",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    if reply.tool_calls:
        out.append(chunk({"tool_calls": openai_tool_calls(reply, model)}))
        out.append(chunk({}, "tool_calls"))
    else:
        out.extend(chunk({"content": piece}) for piece in chunks_of(reply.text))
        out.append(chunk({}, "stop"))
    if include_usage:
        usage = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [], "usage": usage_of(prompt_tokens, completion_tokens)}
        out.append(usage)
    return out


def usage_of(prompt_tokens, completion_tokens):
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def openai_whole(model, reply, completion_id, prompt_tokens, completion_tokens):
    message = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["content"] = None
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"}
                                 for c in openai_tool_calls(reply, model)]
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": "standin",
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
            "usage": usage_of(prompt_tokens, completion_tokens)}


def token_estimate(messages):
    return max(1, sum(len(text_of(m.get("content"))) for m in messages) // 4)


def model_entry(name):
    family = name.split(":")[0]
    return {
        "name": name,
        "model": name,
        "modified_at": "2026-01-01T00:00:00Z",
        "size": 1,
        "digest": hashlib.sha256(("stand-in " + name).encode()).hexdigest(),
        "details": {"parent_model": "", "format": "gguf", "family": family, "families": [family],
                    "parameter_size": "stand-in", "quantization_level": "stand-in"},
    }


# ------------------------------------------------------------------ server


class State:
    def __init__(self, models, context, log_path):
        self.models = models
        self.context = context
        self.log_path = log_path
        self.lock = threading.Lock()
        self.tools_seen = set()
        self.counter = 0

    def next_id(self):
        with self.lock:
            self.counter += 1
            return "chatcmpl-standin-%d" % self.counter

    def log(self, entry):
        entry = dict(entry, ts=round(time.time(), 3), standin=True)
        line = json.dumps(entry, sort_keys=True)
        with self.lock:
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
            else:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()

    def first_tools(self, model, tools):
        key = (model, tuple(sorted(tool_names(tools))))
        with self.lock:
            if key in self.tools_seen:
                return False
            self.tools_seen.add(key)
            return True

    def known(self, model):
        return not self.models or model in self.models


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin-model/1"
    state = None  # set by main()

    def log_message(self, fmt, *args):  # the JSON-lines log is the log
        pass

    # -- helpers

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self, content_type):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def write_chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        return json.loads(raw)

    def not_found_model(self, endpoint, model):
        self.state.log({"endpoint": endpoint, "model": model, "error": "unknown model"})
        self.send_json(404, {"error": "model '%s' not found (stand-in serves: %s)"
                             % (model, ", ".join(self.state.models))})

    # -- routes

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in ("/", "/api/version", "/v1/models", "/api/tags", "/api/ps"):
            self.state.log({"endpoint": "GET " + path, "user_agent": self.headers.get("User-Agent", "")})
        if path == "/":
            self.send_response(200)
            body = b"Ollama is running (stand-in model server)"
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/api/version":
            self.send_json(200, {"version": VERSION})
        elif path in ("/api/tags", "/api/ps"):
            self.send_json(200, {"models": [model_entry(m) for m in self.state.models]})
        elif path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "stand-in"} for m in self.state.models]})
        elif path.startswith("/v1/models/"):
            model = path[len("/v1/models/"):]
            if not self.state.known(model):
                return self.not_found_model("GET /v1/models/", model)
            self.send_json(200, {"id": model, "object": "model", "created": 0, "owned_by": "stand-in"})
        else:
            self.send_json(404, {"error": "stand-in model server: no route GET %s" % path})

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        path = self.path.split("?")[0]
        try:
            body = self.read_json()
        except ValueError as e:
            return self.send_json(400, {"error": "stand-in: request body is not JSON: %s" % e})
        if path == "/api/show":
            return self.show(body)
        if path == "/api/chat":
            return self.chat(body, ollama=True)
        if path in ("/v1/chat/completions", "/chat/completions"):
            return self.chat(body, ollama=False)
        self.state.log({"endpoint": "POST " + path, "error": "no route"})
        self.send_json(404, {"error": "stand-in model server: no route POST %s" % path})

    def show(self, body):
        model = body.get("model") or body.get("name") or ""
        self.state.log({"endpoint": "POST /api/show", "model": model})
        if not self.state.known(model):
            return self.not_found_model("POST /api/show", model)
        family = model.split(":")[0].split(".")[0].replace("-", "")
        self.send_json(200, {
            "license": "stand-in",
            "modelfile": "# stand-in model server: no weights\n",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": model_entry(model)["details"],
            "model_info": {"general.architecture": family, "%s.context_length" % family: self.state.context},
            "capabilities": ["completion", "tools"],
            "modified_at": "2026-01-01T00:00:00Z",
        })

    def chat(self, body, ollama):
        endpoint = "POST /api/chat" if ollama else "POST /v1/chat/completions"
        model = body.get("model", "")
        if not self.state.known(model):
            return self.not_found_model(endpoint, model)
        messages = body.get("messages") or []
        tools = body.get("tools") or []
        stream = body.get("stream", ollama)  # Ollama streams unless told not to
        reply = script(model, messages, tools)
        start = last_user_index(messages)
        entry = {
            "endpoint": endpoint,
            "model": model,
            "stream": bool(stream),
            "messages": len(messages),
            "user_message": user_turn(messages, start)[-4000:] if start >= 0 else None,
            "tools": tool_names(tools),
            "rule": reply.rule,
            "reply": reply.text,
            "tool_calls": [{"name": n, "arguments": a} for n, a in reply.tool_calls],
            "user_agent": self.headers.get("User-Agent", ""),
        }
        _, results = tool_calls_since(messages, start)
        if results:
            entry["tool_result"] = results[-1][:4000]
        if tools and self.state.first_tools(model, tools):
            entry["tools_full"] = tools
        self.state.log(entry)
        prompt_tokens = token_estimate(messages)
        completion_tokens = max(1, len(reply.text or "") // 4)
        if ollama:
            if stream:
                self.start_stream("application/x-ndjson")
                for line in ollama_messages(model, reply, prompt_tokens, completion_tokens):
                    self.write_chunk(json.dumps(line).encode() + b"\n")
                self.end_stream()
            else:
                self.send_json(200, ollama_whole(model, reply, prompt_tokens, completion_tokens))
            return
        completion_id = self.state.next_id()
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self.start_stream("text/event-stream")
            for chunk in openai_chunks(model, reply, completion_id, prompt_tokens, completion_tokens, include_usage):
                self.write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.write_chunk(b"data: [DONE]\n\n")
            self.end_stream()
        else:
            self.send_json(200, openai_whole(model, reply, completion_id, prompt_tokens, completion_tokens))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="STAND-IN model server (not a model): deterministic, scripted replies on Ollama's "
                    "native API and the OpenAI-compatible API, for the appliance's rehearsal and VM test. "
                    "Every reply starts with '[stand-in]'.")
    parser.add_argument("--listen", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=11434, help="port (default 11434, Ollama's)")
    parser.add_argument("--model", action="append", default=[], dest="models",
                        help="a model name to serve (repeatable); requests for others get 404. "
                             "Without any, every name is accepted")
    parser.add_argument("--context", type=int, default=262144, help="context length /api/show reports")
    parser.add_argument("--log", help="JSON-lines request log (default: stdout)")
    parser.add_argument("--server-name", help="Matrix server name for the user IDs loop replies mention")
    args = parser.parse_args(argv)
    global SERVER_NAME
    SERVER_NAME = args.server_name
    Handler.state = State(args.models, args.context, args.log)
    server = ThreadingHTTPServer((args.listen, args.port), Handler)
    server.daemon_threads = True
    Handler.state.log({"event": "listening", "listen": args.listen, "port": server.server_address[1],
                       "models": args.models, "note": "stand-in model server, not a model"})
    sys.stderr.write("stand-in model server (not a model) listening on %s:%d\n"
                     % (args.listen, server.server_address[1]))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
