"""The receiver a Python webhook service tells its partners to write: Flask, the payload
parsed from the request, and X-Signature = hex HMAC-SHA256 of json.dumps(payload, sort_keys=True).

    WEBHOOK_SECRET=... PORT=9000 python/.venv/bin/python python/flask_receiver.py

It verifies webhooks created with signature_format => 'hex', signature_input =>
'python_sorted_json' and envelope => '{"event": "event_type", "timestamp": "created_at"}'
(docs/MIGRATING.md). Prints one JSON line per request.
"""
import hashlib
import hmac
import json
import os

from flask import Flask, jsonify, request

SECRET = os.environ["WEBHOOK_SECRET"].encode()
app = Flask(__name__)


def reply(status, entry):
    print(json.dumps(entry), flush=True)
    return jsonify(entry), status


@app.post("/webhooks")
def webhook():
    given = request.headers.get("X-Signature", "")
    payload = json.loads(request.get_data())  # or request.get_json()
    expected = hmac.new(SECRET, json.dumps(payload, sort_keys=True).encode(), hashlib.sha256).hexdigest()
    if not given:
        return reply(401, {"result": "rejected", "reason": "missing signature"})
    if not hmac.compare_digest(expected, given):
        return reply(401, {"result": "rejected", "reason": "bad signature"})
    return reply(200, {"result": "accepted", "event": payload["event_type"], "event_id": payload["id"]})


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "9000"))
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    app.run(host="127.0.0.1", port=port)
