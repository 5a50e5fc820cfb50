// A minimal webhook_ext receiver: Node.js >= 18, standard library only.
//   WEBHOOK_SECRET=whsec_... PORT=8000 node receiver.js
// Optional: MAX_AGE_SECONDS (default 300). Prints one JSON line per request.
'use strict';
const crypto = require('node:crypto');
const http = require('node:http');

const SECRET = process.env.WEBHOOK_SECRET;
const PORT = Number(process.env.PORT || 8000);
const MAX_AGE_SECONDS = Number(process.env.MAX_AGE_SECONDS || 300);
const MAX_BODY_BYTES = 1024 * 1024;
if (!SECRET) {
  console.error('WEBHOOK_SECRET is required');
  process.exit(1);
}

// Event ids already handled. Delivery is at least once: a retry after a lost response, or
// webhook_retry(), sends the same event again. In production keep them in your database
// (a unique key, written in the same transaction as the work).
const seen = new Set();

function reply(res, status, entry) {
  // The body is stored by the sender (webhook_delivery.response_body): say why.
  res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(entry));
  process.stdout.write(JSON.stringify(entry) + '\n');
}

const reject = (res, reason) => reply(res, 401, { result: 'rejected', reason });

function handle(req, raw, res) {
  if (req.method !== 'POST') return reply(res, 405, { result: 'rejected', reason: 'not POST' });

  // HMAC over the RAW body bytes as received. Never over re-serialized JSON: key order,
  // spacing and escapes would differ from what was signed.
  const given = req.headers['x-webhook-signature']; // or the webhook's signature_header
  if (!given) return reject(res, 'missing signature');
  const expected = 'sha256=' + crypto.createHmac('sha256', SECRET).update(raw).digest('hex');
  // Constant-time comparison: `===` returns at the first differing byte, and that timing
  // lets an attacker find a valid signature byte by byte.
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  if (a.length !== b.length || !crypto.timingSafeEqual(a, b)) return reject(res, 'bad signature');

  // X-Webhook-Timestamp is the time of this attempt (retries get a fresh one). A request
  // older than the window is a replay of an old capture. The sha256= signature does not
  // cover this header, so the dedupe below is what really stops replays.
  const ts = Number(req.headers['x-webhook-timestamp']);
  if (!Number.isInteger(ts) || Math.abs(Date.now() / 1000 - ts) > MAX_AGE_SECONDS) {
    return reject(res, 'stale timestamp');
  }

  // Dedupe on the event id: same as X-Event-ID, but taken from the signed body.
  const event = JSON.parse(raw.toString('utf8'));
  const entry = { event: event.event, event_id: event.id };
  if (seen.has(event.id)) return reply(res, 200, { result: 'duplicate', ...entry });
  seen.add(event.id);

  // Answer 2xx at once and do the real work afterwards (a job queue): the sender gives up
  // after webhook.timeout (5 s) and retries.
  reply(res, 200, { result: 'accepted', ...entry });
  setImmediate(() => {
    /* process(event) */
  });
}

http
  .createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) req.destroy(); // no event is this big
      chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        handle(req, Buffer.concat(chunks), res);
      } catch {
        reply(res, 400, { result: 'rejected', reason: 'bad request' });
      }
    });
  })
  .listen(PORT, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${PORT}`));
