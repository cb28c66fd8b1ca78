#!/usr/bin/env python3
"""STAND-IN for the GitHub REST API in the rehearsal (not GitHub).

Served on "the internet" of tests/rehearsal (a namespace with no route out)
under the name api.github.com, with a certificate from a test CA that only
the rehearsal's `picoclaw` image trusts. balthasar's `gh` reaches it through
the egress proxy (a CONNECT tunnel), as it would reach GitHub.

  GET /user   with `Authorization: token <T>` (or `Bearer <T>`), T the
              content of --token-file: 200 {"login": "rehearsal-octocat"};
              any other credential: 401, as GitHub answers
  anything else: 404

Every request is logged as one JSON line (--log): method, path, whether
the credential matched and which one it was ("token", "placeholder": the
value of --placeholder-file, the stand-in for the token that the agent's
sandbox holds, "none" or "other"), never the credential itself.
"""

import argparse
import http.server
import json
import ssl

LOGIN = "rehearsal-octocat"


def sent(credential, token, placeholders):
    if not credential:
        return "none"
    if credential == token:
        return "token"
    if credential in placeholders:
        return "placeholder"
    return "other"


def handler(token, placeholders, log_path):
    class GitHub(http.server.BaseHTTPRequestHandler):
        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            scheme, _, credential = self.headers.get("Authorization", "").partition(" ")
            authorized = scheme.lower() in ("token", "bearer") and credential == token
            with open(log_path, "a") as log:
                entry = {"method": "GET", "path": self.path, "host": self.headers.get("Host", ""), "authorized": authorized}
                entry["sent"] = sent(credential, token, placeholders)
                log.write(json.dumps(entry) + "\n")
            if self.path.split("?")[0] != "/user":
                return self.reply(404, {"message": "Not Found"})
            if not authorized:
                return self.reply(401, {"message": "Bad credentials"})
            return self.reply(200, {"login": LOGIN, "id": 1, "type": "User"})

        def log_message(self, *_):
            pass

    return GitHub


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--cert", required=True, help="PEM certificate chain for api.github.com")
    parser.add_argument("--key", required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--placeholder-file", help="the placeholders the sandboxes hold, one a line")
    args = parser.parse_args()
    token = open(args.token_file).read().strip()
    placeholders = set()
    if args.placeholder_file:
        placeholders = {line.strip() for line in open(args.placeholder_file) if line.strip()}
    server = http.server.ThreadingHTTPServer((args.bind, args.port), handler(token, placeholders, args.log))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
