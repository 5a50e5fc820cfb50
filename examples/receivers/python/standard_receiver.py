"""A webhook_ext receiver that verifies the Standard Webhooks headers (webhook-id,
webhook-timestamp, webhook-signature) with the official library (pip install standardwebhooks).

    WEBHOOK_SECRET=whsec_... PORT=8000 .venv/bin/python standard_receiver.py

Prints one JSON line per request. The library's timestamp window is fixed at 5 minutes.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

# A whsec_ secret: the library signs with the base64-decoded key, exactly as webhook_ext does.
WEBHOOK = Webhook(os.environ["WEBHOOK_SECRET"])
PORT = int(os.environ.get("PORT", "8000"))
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
        raw = self.rfile.read(length)  # the RAW body: the signature covers these exact bytes
        if not self.headers.get("webhook-signature"):
            return self.reject("missing signature")
        try:
            # Signs "<webhook-id>.<webhook-timestamp>.<body>", so unlike sha256= the id and
            # the timestamp are authenticated too. Compares in constant time, accepts any of
            # the space-separated v1 tokens (several while a secret rotates), and refuses a
            # timestamp more than 5 minutes off.
            event = WEBHOOK.verify(raw, dict(self.headers))
        except WebhookVerificationError as err:
            return self.reject("stale timestamp" if "timestamp" in str(err) else "bad signature")
        except ValueError:  # malformed signature token or body that is not UTF-8
            return self.reject("bad signature")

        # Dedupe on webhook-id (= the event id, X-Event-ID): signed, the same on every retry.
        event_id = self.headers["webhook-id"]
        entry = {"event": event["event"], "event_id": event_id}
        with seen_lock:
            duplicate = event_id in seen
            seen.add(event_id)
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
