"""A minimal webhook_ext receiver: Python 3, standard library only.

    WEBHOOK_SECRET=whsec_... PORT=8000 python3 receiver.py

Optional: MAX_AGE_SECONDS (default 300). Prints one JSON line per request.
"""

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WEBHOOK_SECRET"].encode()
PORT = int(os.environ.get("PORT", "8000"))
MAX_AGE_SECONDS = int(os.environ.get("MAX_AGE_SECONDS", "300"))
MAX_BODY_BYTES = 1024 * 1024

# Event ids already handled. Delivery is at least once: a retry after a lost response, or
# webhook_retry(), sends the same event again. In production keep them in your database
# (a unique key, written in the same transaction as the work).
seen = set()
seen_lock = threading.Lock()  # requests run in parallel threads


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 <= length <= MAX_BODY_BYTES:
            return self.reply(413, {"result": "rejected", "reason": "too large"})
        # HMAC over the RAW body bytes as received. Never over re-serialized JSON: key
        # order, spacing and escapes would differ from what was signed.
        raw = self.rfile.read(length)
        given = self.headers.get("X-Webhook-Signature")  # or the webhook's signature_header
        if not given:
            return self.reject("missing signature")
        expected = "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()
        # Constant-time comparison: `==` returns at the first differing byte, and that
        # timing lets an attacker find a valid signature byte by byte.
        if not hmac.compare_digest(expected.encode(), given.encode()):
            return self.reject("bad signature")

        # X-Webhook-Timestamp is the time of this attempt (retries get a fresh one). A
        # request older than the window is a replay of an old capture. The sha256= signature
        # does not cover this header, so the dedupe below is what really stops replays.
        ts = self.headers.get("X-Webhook-Timestamp", "")
        if not (ts.isascii() and ts.isdigit()) or abs(time.time() - int(ts)) > MAX_AGE_SECONDS:
            return self.reject("stale timestamp")

        # Dedupe on the event id: same as X-Event-ID, but taken from the signed body.
        event = json.loads(raw)
        entry = {"event": event["event"], "event_id": event["id"]}
        with seen_lock:
            duplicate = event["id"] in seen
            seen.add(event["id"])
        if duplicate:
            return self.reply(200, {"result": "duplicate", **entry})

        # Answer 2xx at once and do the real work afterwards (a job queue): the sender gives
        # up after webhook.timeout (5 s) and retries.
        self.reply(200, {"result": "accepted", **entry})
        # process(event)

    def reject(self, reason):
        self.reply(401, {"result": "rejected", "reason": reason})

    def reply(self, status, entry):
        # The body is stored by the sender (webhook_delivery.response_body): say why.
        body = json.dumps(entry).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        sys.stdout.write(json.dumps(entry) + "\n")  # one write per line: threads do not interleave
        sys.stdout.flush()

    def log_message(self, format, *args):
        pass  # the JSON line above replaces the default access log


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print(f"listening on http://127.0.0.1:{PORT}", flush=True)
    server.serve_forever()
