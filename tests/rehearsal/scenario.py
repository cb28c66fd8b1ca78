#!/usr/bin/env python3
"""The rehearsal's scenario: a Matrix client acting as the human admin
(@gendo) and as a stranger, over real HTTP to Synapse, asserting what the
appliance's agents do with the STAND-IN model server behind them.
Python 3 standard library only (it also runs in the NixOS VM test).

Steps (--step, repeatable; default: all, in this order):
  joined       every agent is joined to the room
  mention      each agent, mentioned, answers within --reply-timeout (time
               printed); the stand-in's log shows the request with that
               agent's model (when --standin-log is given)
  unmentioned  a message naming no agent gets no answer within --quiet
  stranger     a non-member account (made with Synapse's shared-secret
               admin registration) is ignored: in a DM to each agent and
               in another room it invites each agent to
  code         --code-agent, asked to "run code", answers with the
               program's output (the stand-in's program prints
               "computed 42001"); with --approve-code the admin approves
               the warden's code execution cards in the ops room first
  browse       --browser-agent, asked to "read page --page-url", answers
               with the page title (--page-title, if given, must match)
  loop         the stand-in makes --loop-agents mention each other; the
               number of agent messages over --loop-window is at most
               --loop-max, the first reply arrives, and no agent log
               (--agent-log) shows a rate-limited send
  warden       (not in the default steps; docs/warden.md) with the warden
               running: `!status` lists every agent; a stranger's and an
               agent's `!halt all` are refused and audited (--audit-file);
               `!halt` mutes --code-agent at the homeserver and `!resume`
               lifts it; two agents' own accounts (--agent-token) mentioning
               each other are muted at the plan's --loop-budget; each
               --kill agent, killed with --kill-command, is one notice in
               the ops room and answers again; `appliance audit verify`
               (--appliance) accepts the trail and names a flipped byte

Output: one human line per check on stderr; a JSON document on stdout
(and in --json FILE): {"ok": bool, "results": [{"step", "ok", "detail",
"seconds", ...}]}. Exit status 0 only if every check passed.

Flags: --homeserver, --admin-password-file, --agent NAME=MODEL ... (the
rehearsal, tests/rehearsal/hub.rs, and the NixOS VM test pass them).
"""

import argparse
import hashlib
import os
import subprocess
import tempfile
import hmac
import json
import re
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CODE_OUTPUT = "computed 42001"
# The warden's approval card (docs/warden.md, "Code execution approvals").
CARD = re.compile(r"^code execution request (c\d+): .*`!approve \1`")

STEPS = ["joined", "mention", "unmentioned", "stranger", "code", "browse", "loop"]
EXTRA_STEPS = ["warden"]
# What a rate-limited send looks like in the agents' logs (Synapse's errcode,
# the HTTP reason, Hermes' give-up line, a logged status); not a bare "429",
# which log timestamps contain (",429 INFO").
RATE_LIMITED = re.compile(r"M_LIMIT_EXCEEDED|Too Many Requests|Fallback send also failed|(?:status|code|HTTP)\D{0,3}429\b",
                          re.IGNORECASE)


class Failure(Exception):
    pass


# ------------------------------------------------------------------ Matrix


class Matrix:
    """A minimal client-server API client: what the scenario needs."""

    def __init__(self, base, token=None):
        self.base = base.rstrip("/")
        self.token = token
        self.since = None
        self.txn = 0

    def call(self, method, path, body=None, timeout=30, query=None):
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        for attempt in range(8):
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    return json.loads(r.read() or b"{}")
            except urllib.error.HTTPError as e:
                payload = e.read()
                try:
                    err = json.loads(payload)
                except ValueError:
                    err = {"error": payload.decode(errors="replace")}
                if e.code == 429 and attempt < 7:
                    time.sleep(min(10, (err.get("retry_after_ms") or 1000) / 1000))
                    continue
                raise MatrixError(e.code, err, method, path)

    def login(self, user, password):
        reply = self.call("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password, "initial_device_display_name": "rehearsal scenario"})
        self.token = reply["access_token"]
        return reply

    def room_id(self, alias_or_id):
        if alias_or_id.startswith("!"):
            return alias_or_id
        alias = urllib.parse.quote(alias_or_id, safe="")
        return self.call("GET", "/_matrix/client/v3/directory/room/" + alias)["room_id"]

    def join(self, room):
        return self.call("POST", "/_matrix/client/v3/join/" + urllib.parse.quote(room, safe=""), {})

    def joined_members(self, room_id):
        return self.call("GET", "/_matrix/client/v3/rooms/%s/joined_members" % urllib.parse.quote(room_id))["joined"]

    def membership(self, room_id, user_id):
        try:
            state = self.call("GET", "/_matrix/client/v3/rooms/%s/state/m.room.member/%s"
                              % (urllib.parse.quote(room_id), urllib.parse.quote(user_id)))
            return state.get("membership")
        except MatrixError as e:
            if e.status == 404:
                return None
            raise

    def send(self, room_id, text, mention=()):
        self.txn += 1
        content = {"msgtype": "m.text", "body": text}
        if mention:
            content["m.mentions"] = {"user_ids": list(mention)}
            html = text
            for user in mention:
                html = html.replace(user, '<a href="https://matrix.to/#/%s">%s</a>' % (user, user))
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = html
        txn = "scenario-%d-%d" % (int(time.time() * 1000), self.txn)
        return self.call("PUT", "/_matrix/client/v3/rooms/%s/send/m.room.message/%s"
                         % (urllib.parse.quote(room_id), txn), content)["event_id"]

    def sync_start(self):
        reply = self.call("GET", "/_matrix/client/v3/sync", query={"timeout": "0", "filter": json.dumps(
            {"room": {"timeline": {"limit": 1}}, "presence": {"not_types": ["*"]}})})
        self.since = reply["next_batch"]

    def poll(self, seconds):
        """Message events that arrived since the last poll, up to `seconds`
        of long-polling: [(room_id, event)]."""
        reply = self.call("GET", "/_matrix/client/v3/sync", timeout=seconds + 30, query={
            "since": self.since, "timeout": str(int(seconds * 1000)),
            "filter": json.dumps({"presence": {"not_types": ["*"]}, "room": {"timeline": {"limit": 100}}})})
        self.since = reply["next_batch"]
        events = []
        for room_id, room in reply.get("rooms", {}).get("join", {}).items():
            for event in room.get("timeline", {}).get("events", []):
                if event.get("type") == "m.room.message":
                    events.append((room_id, event))
        return events


class MatrixError(Exception):
    def __init__(self, status, err, method, path):
        super().__init__("%s %s -> %d %s: %s" % (method, path, status, err.get("errcode", ""), err.get("error", "")))
        self.status = status
        self.errcode = err.get("errcode")


def register_with_shared_secret(base, secret, user, password, admin=False):
    """Synapse's shared-secret admin registration (HMAC-SHA1 over the nonce)."""
    client = Matrix(base)
    nonce = client.call("GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(secret.encode(), ("\x00".join([nonce, user, password, "admin" if admin else "notadmin"])).encode(),
                   hashlib.sha1).hexdigest()
    reply = client.call("POST", "/_synapse/admin/v1/register", {
        "nonce": nonce, "username": user, "password": password, "admin": admin, "mac": mac})
    client.token = reply["access_token"]
    return client, reply["user_id"]


# ----------------------------------------------------------------- harness


class Scenario:
    def __init__(self, args):
        self.args = args
        self.results = []
        self.agents = {}  # name -> {"user_id", "model"}
        for spec in args.agent:
            name, _, model = spec.partition("=")
            self.agents[name] = {"user_id": "@%s:%s" % (name, args.server_name), "model": model}
        self.agent_logs = dict(s.split("=", 1) for s in args.agent_log)
        self.admin = None
        self.room_id = None

    # -- reporting

    def record(self, step, ok, detail, **extra):
        entry = {"step": step, "ok": ok, "detail": detail}
        entry.update(extra)
        self.results.append(entry)
        mark = "ok  " if ok else "FAIL"
        secs = " (%.1f s)" % extra["seconds"] if "seconds" in extra else ""
        print("%s %-11s %s%s" % (mark, step, detail, secs), file=sys.stderr, flush=True)

    # -- helpers

    def tag(self):
        return "tag-" + secrets.token_hex(4)

    def agent_by_user(self, user_id):
        for name, agent in self.agents.items():
            if agent["user_id"] == user_id:
                return name
        return None

    def wait_for(self, predicate, seconds):
        """Polls sync until predicate(room_id, event) is true for an event;
        returns (event, elapsed) or (None, elapsed). Keeps every event seen
        in self.seen for later checks."""
        started = time.time()
        while True:
            left = seconds - (time.time() - started)
            if left <= 0:
                return None, time.time() - started
            for room_id, event in self.admin.poll(min(left, 5)):
                self.seen.append((room_id, event, time.time()))
                if predicate(room_id, event):
                    return event, time.time() - started

    def collect(self, seconds):
        started = time.time()
        out = []
        while time.time() - started < seconds:
            for room_id, event in self.admin.poll(min(5, seconds - (time.time() - started)) or 0.1):
                self.seen.append((room_id, event, time.time()))
                out.append((room_id, event, time.time()))
        return out

    def standin_entries(self, since_ts):
        if not self.args.standin_log:
            return None
        entries = []
        for line in Path(self.args.standin_log).read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("ts", 0) >= since_ts - 1:
                entries.append(entry)
        return entries

    def mention_text(self, name, rest):
        return "%s %s" % (self.agents[name]["user_id"], rest)

    # -- setup

    def connect(self):
        password = Path(self.args.admin_password_file).read_text().strip()
        self.admin = Matrix(self.args.homeserver)
        self.admin.login(self.args.admin, password)
        self.room_id = self.admin.room_id(self.args.room)
        try:
            self.admin.join(self.room_id)
        except MatrixError as e:
            raise Failure("@%s cannot join %s: %s" % (self.args.admin, self.args.room, e))
        self.admin.sync_start()
        self.seen = []

    # -- steps

    def step_joined(self):
        deadline = time.time() + self.args.join_timeout
        while True:
            joined = self.admin.joined_members(self.room_id)
            missing = [n for n, a in self.agents.items() if a["user_id"] not in joined]
            if not missing:
                return self.record("joined", True, "every agent is joined to %s: %s" % (self.args.room, ", ".join(self.agents)))
            if time.time() > deadline:
                return self.record("joined", False, "not joined to %s after %d s: %s" % (
                    self.args.room, self.args.join_timeout, ", ".join(missing)))
            time.sleep(1)

    def step_mention(self):
        """Mentions every agent at once (so rate limits would show), then
        waits for every reply."""
        sent = {}
        since = time.time()
        for name in self.agents:
            tag = self.tag()
            self.admin.send(self.room_id, self.mention_text(name, "hello, who are you? " + tag),
                            mention=[self.agents[name]["user_id"]])
            sent[name] = (tag, time.time())
        pending = dict(sent)
        while pending:
            elapsed = time.time() - since
            left = self.args.reply_timeout - elapsed
            if left <= 0:
                break
            for room_id, event in self.admin.poll(min(left, 5)):
                self.seen.append((room_id, event, time.time()))
                sender = self.agent_by_user(event.get("sender"))
                body = event.get("content", {}).get("body", "")
                if sender in pending and pending[sender][0] in body:
                    took = time.time() - pending[sender][1]
                    del pending[sender]
                    ok_model, model_detail = self.check_model(sender, sent[sender][0], since)
                    self.record("mention", ok_model, "%s answered %r%s" % (sender, body[:120], model_detail),
                                agent=sender, seconds=round(took, 2))
        for name in pending:
            self.record("mention", False, "%s did not answer a mention within %d s (tag %s)" % (
                name, self.args.reply_timeout, pending[name][0]), agent=name)

    def check_model(self, name, tag, since):
        entries = self.standin_entries(since)
        if entries is None:
            return True, ""
        model = self.agents[name]["model"]
        hits = [e for e in entries if tag in (e.get("user_message") or "")]
        if not hits:
            return False, "; but the stand-in's log has no request carrying %s" % tag
        models = sorted({e.get("model") for e in hits})
        if models != [model]:
            return False, "; but the stand-in was asked with model(s) %s, expected %s" % (models, model)
        return True, "; the stand-in served %s (%s)" % (model, hits[0].get("endpoint"))

    def step_unmentioned(self):
        tag = self.tag()
        since = time.time()
        self.admin.send(self.room_id, "a note for the humans only, nobody needs to answer " + tag)
        events = self.collect(self.args.quiet)
        answers = [e for _, e, _ in events if self.agent_by_user(e.get("sender")) and tag in e["content"].get("body", "")]
        asked = [e for e in (self.standin_entries(since) or []) if tag in (e.get("user_message") or "")]
        if answers or asked:
            return self.record("unmentioned", False, "an unmentioned message was answered: %d repl(ies), %d model request(s)"
                               % (len(answers), len(asked)))
        self.record("unmentioned", True, "no agent answered or asked the model in %d s" % self.args.quiet)

    def step_stranger(self):
        secret = Path(self.args.registration_secret_file).read_text().strip()
        user = "stranger" + secrets.token_hex(3)
        stranger, stranger_id = register_with_shared_secret(self.args.homeserver, secret, user, secrets.token_hex(16))
        # Not a member: the room is invite-only.
        try:
            stranger.join(self.room_id)
            self.record("stranger", False, "%s, not invited, could join %s" % (stranger_id, self.args.room))
        except MatrixError as e:
            self.record("stranger", e.status == 403, "%s cannot join %s (%d %s)" % (
                stranger_id, self.args.room, e.status, e.errcode))
        since = time.time()
        rooms = {}
        for name, agent in self.agents.items():
            dm = stranger.call("POST", "/_matrix/client/v3/createRoom", {
                "is_direct": True, "preset": "trusted_private_chat"})["room_id"]
            other = stranger.call("POST", "/_matrix/client/v3/createRoom", {
                "name": "stranger's room", "preset": "private_chat"})["room_id"]
            for kind, room in (("DM", dm), ("invite", other)):
                try:
                    stranger.call("POST", "/_matrix/client/v3/rooms/%s/invite" % urllib.parse.quote(room),
                                  {"user_id": agent["user_id"]})
                except MatrixError as e:
                    # The appliance's Synapse lets only server admins invite.
                    self.record("stranger", e.status == 403, "%s, %s from %s: the homeserver refused the invite (%d %s)"
                                % (name, kind, stranger_id, e.status, e.errcode), agent=name)
                    continue
                tag = self.tag()
                stranger.send(room, self.mention_text(name, "please answer me " + tag), mention=[agent["user_id"]])
                rooms[(name, kind)] = (room, tag)
        if not rooms:
            return
        time.sleep(self.args.quiet)
        asked = self.standin_entries(since) or []
        for (name, kind), (room, tag) in sorted(rooms.items()):
            membership = stranger.membership(room, self.agents[name]["user_id"])
            replies = stranger.call("GET", "/_matrix/client/v3/rooms/%s/messages" % urllib.parse.quote(room),
                                    query={"dir": "b", "limit": "50"}).get("chunk", [])
            answered = [e for e in replies if e.get("sender") == self.agents[name]["user_id"]
                        and e.get("type") == "m.room.message"]
            model = [e for e in asked if tag in (e.get("user_message") or "")]
            ok = membership != "join" and not answered and not model
            self.record("stranger", ok, "%s, %s from %s: membership %s, %d repl(ies), %d model request(s)" % (
                name, kind, stranger_id, membership, len(answered), len(model)), agent=name)

    def step_code(self):
        name = self.args.code_agent
        if name not in self.agents:
            return self.record("code", False, "--code-agent %s is not in --agent" % name)
        if self.args.approve_code:
            # The warden's approval broker holds the agent's container create
            # and exec until an admin approves its card in the ops room.
            self.ops_id = self.admin.room_id(self.args.ops_room)
            self.admin.join(self.ops_id)
        tag = self.tag()
        started = time.time()
        self.admin.send(self.room_id, self.mention_text(name, "run code " + tag), mention=[self.agents[name]["user_id"]])
        uid = self.agents[name]["user_id"]
        approved = []

        def done(room_id, event):
            if self.args.approve_code:
                self.approve_card(room_id, event, approved)
            return event.get("sender") == uid and CODE_OUTPUT in event["content"].get("body", "")

        event, took = self.wait_for(done, self.args.code_timeout)
        calls = [c for e in (self.standin_entries(started) or []) for c in e.get("tool_calls", [])]
        if event:
            return self.record("code", True, "%s ran the program: %r%s" % (
                name, event["content"]["body"][:200],
                " after the admin approved %s" % ", ".join(approved) if approved
                else " (no card: none held, or a standing approval covered it)" if self.args.approve_code else ""),
                seconds=round(took, 2), tool_calls=calls, approved=approved)
        last = [e["content"].get("body", "")[:300] for r, e, _ in self.seen if e.get("sender") == uid][-1:]
        self.record("code", False, "%s did not answer with %r within %d s; its last message: %r; tool calls: %s" % (
            name, CODE_OUTPUT, self.args.code_timeout, last, json.dumps(calls)[:500]), tool_calls=calls)

    def approve_card(self, room_id, event, approved):
        """An approval card of the warden in the ops room: the admin approves
        it (docs/warden.md, "Code execution approvals")."""
        if room_id != self.ops_id or event.get("sender") != self.warden_id():
            return
        card = CARD.search(event["content"].get("body", ""))
        if card and card.group(1) not in approved:
            self.admin.send(self.ops_id, "!approve " + card.group(1))
            approved.append(card.group(1))

    def step_browse(self):
        name = self.args.browser_agent
        if name not in self.agents:
            return self.record("browse", False, "--browser-agent %s is not in --agent" % name)
        if not self.args.page_url:
            return self.record("browse", False, "no --page-url given")
        tag = self.tag()
        started = time.time()
        uid = self.agents[name]["user_id"]
        self.admin.send(self.room_id, self.mention_text(name, "read page %s %s" % (self.args.page_url, tag)), mention=[uid])
        want = "page title: " + self.args.page_title if self.args.page_title else "page title: "
        event, took = self.wait_for(lambda r, e: e.get("sender") == uid and want in e["content"].get("body", ""),
                                    self.args.browse_timeout)
        calls = [c for e in (self.standin_entries(started) or []) for c in e.get("tool_calls", [])]
        if event:
            return self.record("browse", True, "%s read the page: %r" % (name, event["content"]["body"][:200]),
                               seconds=round(took, 2), tool_calls=calls)
        last = [e["content"].get("body", "")[:300] for r, e, _ in self.seen if e.get("sender") == uid][-1:]
        self.record("browse", False, "%s did not answer with %r within %d s; its last message: %r; tool calls: %s" % (
            name, want, self.args.browse_timeout, last, json.dumps(calls)[:500]), tool_calls=calls)

    def step_loop(self):
        ring = self.args.loop_agents.split(",")
        if len(ring) < 2 or any(n not in self.agents for n in ring):
            return self.record("loop", False, "--loop-agents needs two or more of --agent, got %s" % ring)
        tag = self.tag()
        first = self.agents[ring[0]]["user_id"]
        logs_before = {n: self.log_size(p) for n, p in self.agent_logs.items()}
        self.admin.send(self.room_id, "%s loop_%s %s" % (first, "_".join(ring), tag), mention=[first])
        events = self.collect(self.args.loop_window)
        bots = [(e, t) for _, e, t in events if self.agent_by_user(e.get("sender"))
                and "loop_" in e["content"].get("body", "")]
        senders = [self.agent_by_user(e["sender"]) for e, _ in bots]
        first_reply = any(self.agent_by_user(e["sender"]) == ring[0] for e, _ in bots)
        ok = first_reply and len(bots) <= self.args.loop_max
        self.record("loop", ok, "%d agent message(s) in %d s after the loop trigger (at most %d allowed): %s%s" % (
            len(bots), self.args.loop_window, self.args.loop_max, ", ".join(senders) or "none",
            "" if first_reply else "; %s never answered the trigger" % ring[0]), messages=len(bots))
        for name, path in sorted(self.agent_logs.items()):
            text = self.log_tail(path, logs_before[name])
            hits = [l for l in text.splitlines() if RATE_LIMITED.search(l)]
            self.record("loop", not hits, "%s's log shows %d rate-limited send(s)%s" % (
                name, len(hits), (": " + hits[0][:200]) if hits else ""), agent=name)

    # -- the warden (docs/warden.md)

    def warden_id(self):
        return "@appliance:%s" % self.args.server_name

    def audit_records(self, kind, actor=None):
        records = []
        for line in Path(self.args.audit_file).read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") == kind and (actor is None or record.get("actor") == actor):
                records.append(record)
        return records

    def wait_audit(self, kind, actor, before, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if len(self.audit_records(kind, actor)) > before:
                return True
            time.sleep(0.5)
        return False

    def command(self, room_id, text, needle, seconds=60):
        """An admin command and the warden's answer containing needle."""
        self.admin.send(room_id, text)
        warden = self.warden_id()
        event, took = self.wait_for(lambda r, e: r == room_id and e.get("sender") == warden
                                    and needle in e["content"].get("body", ""), seconds)
        return (event["content"]["body"] if event else None), took

    def agent_client(self, name):
        path = dict(s.split("=", 1) for s in self.args.agent_token).get(name)
        if not path:
            raise Failure("no --agent-token for %s" % name)
        return Matrix(self.args.homeserver, Path(path).read_text().strip())

    def ops_notices(self, since_ts):
        warden = self.warden_id()
        return [e["content"].get("body", "") for r, e, t in self.seen
                if r == self.ops_id and e.get("sender") == warden and t >= since_ts]

    def step_warden(self):
        self.ops_id = self.admin.room_id(self.args.ops_room)
        self.admin.join(self.ops_id)
        status, took = self.command(self.room_id, "!status", "head sha256")
        missing = [n for n, a in self.agents.items()
                   if status is None or a["user_id"] not in status or "sandbox %s: up" % n not in status]
        self.record("warden", status is not None and not missing, "`!status` answered%s" % (
            "; missing or not up: %s" % ", ".join(missing) if missing else ""), seconds=round(took, 2))
        self.warden_refuses()
        self.warden_halts()
        self.warden_breaks_loop()
        self.warden_sees_kills()
        self.warden_audit_verifies()

    def warden_refuses(self):
        """A stranger's and an agent's `!halt all`: refused, audited, no mute."""
        secret = Path(self.args.registration_secret_file).read_text().strip()
        stranger, stranger_id = register_with_shared_secret(self.args.homeserver, secret,
                                                            "stranger" + secrets.token_hex(3), secrets.token_hex(16))
        # Only the appliance's account (a server admin) may invite here.
        appliance = Matrix(self.args.homeserver, Path(self.args.warden_token_file).read_text().strip())
        appliance.call("POST", "/_matrix/client/v3/rooms/%s/invite" % urllib.parse.quote(self.room_id),
                       {"user_id": stranger_id})
        stranger.join(self.room_id)
        agent = self.args.code_agent
        mutes = len(self.audit_records("mute"))
        for who, client in ((stranger_id, stranger), (self.agents[agent]["user_id"], self.agent_client(agent))):
            before = len(self.audit_records("command.refused", who))
            client.send(self.room_id, "!halt all")
            ok = self.wait_audit("command.refused", who, before)
            self.record("warden", ok, "%s's `!halt all`: %s" % (who, "refused and audited" if ok else "no command.refused record"))
        after = len(self.audit_records("mute"))
        self.record("warden", after == mutes, "refused commands muted %d agent(s)" % (after - mutes))

    def warden_halts(self):
        """`!halt` mutes the code agent at the homeserver: the answer it still
        makes never lands; `!resume` and it answers again."""
        name = self.args.code_agent
        uid = self.agents[name]["user_id"]
        answer, _ = self.command(self.room_id, "!halt %s" % name, "halted")
        self.record("warden", answer is not None, "`!halt %s`: %s" % (name, answer))
        tag = self.tag()
        since = time.time()
        self.admin.send(self.room_id, self.mention_text(name, "hello while halted " + tag), mention=[uid])
        # It still answers: wait until it asked the stand-in, then a while.
        deadline = time.time() + self.args.reply_timeout
        while self.args.standin_log and time.time() < deadline and not [
                e for e in self.standin_entries(since) if tag in (e.get("user_message") or "")]:
            time.sleep(1)
        landed = [e for _, e, _ in self.collect(self.args.quiet) if e.get("sender") == uid]
        self.record("warden", not landed, "halted %s: %d message(s) landed" % (name, len(landed)))
        answer, _ = self.command(self.room_id, "!resume %s" % name, "resumed")
        self.record("warden", answer is not None, "`!resume %s`: %s" % (name, answer))
        self.answers(name, "hello again")

    def answers(self, name, text, seconds=None):
        uid = self.agents[name]["user_id"]
        tag = self.tag()
        self.admin.send(self.room_id, self.mention_text(name, "%s %s" % (text, tag)), mention=[uid])
        event, took = self.wait_for(lambda r, e: e.get("sender") == uid and tag in e["content"].get("body", ""),
                                    seconds or self.args.reply_timeout)
        self.record("warden", event is not None, "%s answered %r" % (name, text), seconds=round(took, 2))

    def warden_breaks_loop(self):
        """Two agents' own accounts mention each other every 2 s, standing in
        for agents whose loop guards failed; Synapse refuses the message
        after the budget (one more may land while the warden mutes)."""
        ring = self.args.loop_agents.split(",")[:2]
        clients = [self.agent_client(n) for n in ring]
        since = time.time()
        # No agent's name in it: Hermes answers a message naming it.
        self.admin.send(self.room_id, "a loop between two agents follows")
        landed, refused = 0, None
        while landed <= self.args.loop_budget + 2:
            to = self.agents[ring[(landed + 1) % 2]]["user_id"]
            try:
                clients[landed % 2].send(self.room_id, "%s what do you think? (%d)" % (to, landed), mention=[to])
                landed += 1
            except MatrixError as e:
                refused = e
                break
            time.sleep(2)
        self.record("warden", refused is not None and refused.status == 403,
                    "loop: %d message(s) landed, then %s" % (landed, refused))
        # The warden counts every agent message since the last human one
        # (the loop's and any a real agent sent): the room up to its notice
        # holds the budget's (one more may land while it writes the power
        # levels), and no agent message follows it.
        warden = self.warden_id()

        def notice(room, prefix):
            return lambda r, e: (r == room and e.get("sender") == warden
                                 and e["content"].get("body", "").startswith(prefix))
        # The warden reads Docker, the proxy's log and the agents' tool logs
        # between two polls: its notices can take a while under load.
        for room, prefix in ((self.room_id, "loop breaker:"), (self.ops_id, "loop breaker in ")):
            if not any(notice(room, prefix)(r, e) for r, e, _ in self.seen
                       if e.get("origin_server_ts", 0) >= since * 1000):
                self.wait_for(notice(room, prefix), 60)
        timeline = [e for r, e, _ in self.seen if r == self.room_id and e.get("origin_server_ts", 0) >= since * 1000]
        notice = next((i for i, e in enumerate(timeline) if e.get("sender") == self.warden_id()
                       and e["content"].get("body", "").startswith("loop breaker:")), None)
        if notice is None:
            self.record("warden", False, "no loop-breaker notice in %s" % self.args.room)
        else:
            before = [e for e in timeline[:notice] if self.agent_by_user(e.get("sender"))]
            after = [e for e in timeline[notice:] if self.agent_by_user(e.get("sender"))]
            budget = self.args.loop_budget
            self.record("warden", len(before) in (budget, budget + 1) and not after,
                        "loop breaker after %d agent message(s) (budget %d); %d after it" % (
                            len(before), budget, len(after)))
        self.record("warden", any(n.startswith("loop breaker in ") for n in self.ops_notices(since)),
                    "the ops room has the loop breaker's notice")
        # A human message lifts it; an agent answering that very message can
        # be faster than the unmute and be refused: speak, wait for the
        # warden's notice, then ask.
        self.admin.send(self.room_id, "enough, the loop is over")
        event, took = self.wait_for(lambda r, e: r == self.room_id and e.get("sender") == warden
                                    and "loop breaker lifted" in e["content"].get("body", ""), 60)
        self.record("warden", event is not None, "a human message lifted the loop breaker", seconds=round(took, 2))
        for name in ring:
            self.answers(name, "the loop is over")

    def warden_sees_kills(self):
        for name in self.args.kill:
            since = time.time()
            subprocess.run(self.args.kill_command.format(name=name), shell=True, check=True)
            prefix = "sandbox %s: died" % name
            deadline = time.time() + 120
            while time.time() < deadline and not any(n.startswith(prefix) for n in self.ops_notices(since)):
                self.collect(5)
            notices = [n for n in self.ops_notices(since) if n.startswith(prefix)]
            self.record("warden", len(notices) == 1, "kill of %s: %d notice(s) in the ops room: %s" % (
                name, len(notices), notices))
            self.answers(name, "back after the kill", seconds=self.args.restart_timeout)

    def warden_audit_verifies(self):
        verify = [self.args.appliance, "audit", "verify"]
        done = subprocess.run(verify + [self.args.audit_file], capture_output=True, text=True)
        self.record("warden", done.returncode == 0, "audit verify: %s" % (done.stdout + done.stderr).strip()[:200])
        lines = Path(self.args.audit_file).read_bytes().split(b"\n")
        lines[1] = lines[1].replace(b'"detail":"', b'"detail":"X', 1)
        with tempfile.TemporaryDirectory() as tmp:
            tampered = os.path.join(tmp, "audit.jsonl")
            Path(tampered).write_bytes(b"\n".join(lines))
            done = subprocess.run(verify + [tampered], capture_output=True, text=True)
        said = (done.stdout + done.stderr).strip()
        self.record("warden", done.returncode != 0 and "line 2" in said, "a changed record: %s" % said[:200])

    @staticmethod
    def log_size(path):
        try:
            return Path(path).stat().st_size
        except OSError:
            return 0

    @staticmethod
    def log_tail(path, offset):
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def run(self, steps):
        try:
            self.connect()
        except (Failure, MatrixError, OSError) as e:
            self.record("connect", False, str(e))
            return
        for step in steps:
            try:
                getattr(self, "step_" + step)()
            except (Failure, MatrixError, OSError) as e:
                self.record(step, False, "error: %s" % e)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--homeserver", help="Synapse's client URL, e.g. http://10.88.0.1:8008")
    parser.add_argument("--server-name", default="magi")
    parser.add_argument("--room", default="#magi:magi")
    parser.add_argument("--admin", default="gendo", help="the human admin's localpart")
    parser.add_argument("--admin-password-file",
                        help="a file holding the admin's password (`appliance admin password gendo` prints it)")
    parser.add_argument("--registration-secret-file", help="Synapse's registration shared secret (for the stranger)")
    parser.add_argument("--agent", action="append", default=[], metavar="NAME=MODEL",
                        help="an agent in the room and the model it should ask for (repeatable)")
    parser.add_argument("--agent-log", action="append", default=[], metavar="NAME=FILE",
                        help="an agent's log, searched for rate-limited sends (repeatable)")
    parser.add_argument("--standin-log", help="the stand-in model server's JSON-lines log")
    parser.add_argument("--step", action="append", choices=STEPS + EXTRA_STEPS,
                        help="run only these steps (repeatable)")
    parser.add_argument("--code-agent", default="casper")
    parser.add_argument("--browser-agent", default="melchior")
    parser.add_argument("--page-url", help="the test page the browser agent reads")
    parser.add_argument("--page-title", help="the title that page has")
    parser.add_argument("--loop-agents", default="melchior,casper")
    parser.add_argument("--loop-window", type=int, default=30, help="seconds to count agent messages after the loop trigger")
    parser.add_argument("--loop-max", type=int, default=1,
                        help="most agent messages the loop may produce in the window (default 1: the first "
                             "agent answers the human, no agent answers an agent)")
    parser.add_argument("--ops-room", help="the warden's ops room (default #appliance_ops:SERVER)")
    parser.add_argument("--warden-token-file", help="the appliance account's token (it invites the stranger)")
    parser.add_argument("--agent-token", action="append", default=[], metavar="NAME=FILE",
                        help="an agent's own access token, for the warden step's refused command and loop")
    parser.add_argument("--audit-file", help="the warden's audit trail")
    parser.add_argument("--appliance", default="appliance", help="the appliance CLI (audit verify)")
    parser.add_argument("--loop-budget", type=int, default=8, help="the plan's loop_budget")
    parser.add_argument("--kill", action="append", default=[], metavar="NAME",
                        help="an agent to kill in the warden step (repeatable)")
    parser.add_argument("--kill-command", default="docker kill --signal=KILL {name}")
    parser.add_argument("--restart-timeout", type=int, default=300,
                        help="seconds for a killed agent to answer again")
    parser.add_argument("--join-timeout", type=int, default=60)
    parser.add_argument("--reply-timeout", type=int, default=120)
    parser.add_argument("--code-timeout", type=int, default=180)
    parser.add_argument("--approve-code", action="store_true",
                        help="in the code step, approve the warden's code execution cards in --ops-room as the admin")
    parser.add_argument("--browse-timeout", type=int, default=180)
    parser.add_argument("--quiet", type=int, default=15, help="seconds to wait for an answer that must not come")
    parser.add_argument("--json", help="also write the JSON results here")
    args = parser.parse_args(argv)
    missing = [f for f in ("homeserver", "admin_password_file") if not getattr(args, f)]
    if missing or not args.agent:
        parser.error("need --homeserver, --admin-password-file and --agent")
    steps = args.step or STEPS
    if "stranger" in steps and not args.registration_secret_file:
        parser.error("the stranger step needs --registration-secret-file")
    if "warden" in steps or args.approve_code:
        args.ops_room = args.ops_room or "#appliance_ops:%s" % args.server_name
    if "warden" in steps:
        needed = [f for f in ("registration_secret_file", "warden_token_file", "audit_file") if not getattr(args, f)]
        if needed:
            parser.error("the warden step needs --" + ", --".join(f.replace("_", "-") for f in needed))
    scenario = Scenario(args)
    scenario.run(steps)
    ok = bool(scenario.results) and all(r["ok"] for r in scenario.results)
    doc = {"ok": ok, "steps": steps, "results": scenario.results}
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print("scenario: %s (%d checks, %d failed)" % ("PASS" if ok else "FAIL", len(scenario.results),
                                                   sum(not r["ok"] for r in scenario.results)), file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
