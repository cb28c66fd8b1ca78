"""appliance-webextract: the appliance's own page extraction service.

It backs the `web_extract` tool of Hermes' `crawler` with nothing public.
It is not Tavily: it speaks only the subset of Tavily's HTTP API that
Hermes 0.19.0's `tavily` web provider calls (plugins/web/tavily/provider.py):

    POST /extract  {"urls": [...], "api_key": KEY, "include_images": false}
    -> {"results": [{"url", "title", "raw_content"}],
        "failed_results": [{"url", "error"}]}

Hermes points its provider here with TAVILY_BASE_URL. Every other path is
404, and `/search` too: search is SearXNG's job.

Pages are fetched with the standard library, which honours HTTP(S)_PROXY:
in the appliance that is the egress proxy, which refuses private, loopback
and metadata addresses by resolved address, and the sandbox's firewall
allows nothing else. Text and title come from trafilatura.

The key is TAVILY_API_KEY in the environment (the host's env file, made at
first boot, never in the Nix store): the variable Hermes sends the key
from, so both read one file.
"""

import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import trafilatura

# A request names a few pages (Hermes sends what the model asked for).
MAX_URLS = 20
MAX_BODY = 64 * 1024
# Pages larger than this are cut: enough for any article, bounded memory.
MAX_PAGE = 5 * 1024 * 1024
FETCH_TIMEOUT = 20
USER_AGENT = "appliance-webextract/1 (+self-hosted page extraction)"
HTML_TYPES = ("text/html", "application/xhtml+xml")


class FetchError(Exception):
    """A page that could not be fetched or read; its message is returned."""


def fetch(url):
    """The page's bytes and content type, through the proxy if one is set."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("only http and https URLs can be extracted")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
            kind = response.headers.get_content_type()
            body = response.read(MAX_PAGE + 1)
    except urllib.error.HTTPError as error:
        raise FetchError(f"fetching the page failed: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(f"fetching the page failed: {reason}") from None
    return body[:MAX_PAGE], kind


def extract(url):
    """One page as {url, title, raw_content}; raises FetchError."""
    body, kind = fetch(url)
    if kind == "text/plain":
        return {"url": url, "title": "", "raw_content": body.decode("utf-8", "replace")}
    if kind not in HTML_TYPES:
        raise FetchError(f"cannot extract text from {kind}")
    text = trafilatura.extract(body, url=url, output_format="markdown", include_links=True)
    if not text:
        raise FetchError("the page has no readable text")
    metadata = trafilatura.extract_metadata(body, default_url=url)
    title = (metadata.title if metadata else None) or ""
    return {"url": url, "title": title, "raw_content": text}


def extract_all(urls):
    """The Tavily-shaped answer for a list of URLs, in their order."""
    started = time.monotonic()
    results, failed = [], []
    for url in urls:
        try:
            results.append(extract(url))
        except FetchError as error:
            failed.append({"url": url, "error": str(error)})
    return {
        "results": results,
        "failed_results": failed,
        "response_time": round(time.monotonic() - started, 3),
    }


def requested_urls(payload):
    """The request's URLs, or None when the payload is not a valid request."""
    urls = payload.get("urls") if isinstance(payload, dict) else None
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls or len(urls) > MAX_URLS:
        return None
    if not all(isinstance(u, str) and u for u in urls):
        return None
    return urls


class Handler(BaseHTTPRequestHandler):
    server_version = "appliance-webextract/1"
    # Set at start: the key every request must carry.
    key = b""

    def log_message(self, format, *args):
        # One line per request, to the journal; never the body (the key).
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))

    def answer(self, status, document):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        # A readiness probe that says what this is, and nothing else.
        if self.path == "/":
            self.answer(200, {"service": "appliance-webextract", "api": "tavily /extract subset"})
        else:
            self.answer(404, {"error": "not found"})

    def authorized(self, payload):
        """The key from the body (Hermes 0.19.0) or a bearer header."""
        given = payload.get("api_key") if isinstance(payload, dict) else None
        header = self.headers.get("Authorization", "")
        if not isinstance(given, str) and header.startswith("Bearer "):
            given = header[len("Bearer "):]
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.key)

    def do_POST(self):
        if self.path != "/extract":
            self.answer(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self.answer(413 if length > MAX_BODY else 400, {"error": "bad request body"})
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self.answer(400, {"error": "the body is not JSON"})
            return
        if not self.authorized(payload):
            self.answer(401, {"error": "missing or wrong api_key"})
            return
        urls = requested_urls(payload)
        if urls is None:
            self.answer(400, {"error": f"`urls` must list 1 to {MAX_URLS} URLs"})
            return
        self.answer(200, extract_all(urls))


def main():
    key = os.environ.get("TAVILY_API_KEY", "")
    if len(key) < 16:
        sys.exit("appliance-webextract: TAVILY_API_KEY (at least 16 characters) is not set")
    Handler.key = key.encode()
    address = os.environ.get("WEBEXTRACT_ADDRESS", "0.0.0.0")
    port = int(os.environ.get("WEBEXTRACT_PORT", "8090"))
    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    sys.stderr.write(f"appliance-webextract: listening on {address}:{port}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
