// The receiver many CRMs' documentation gives partners: Express 5 parses the body with
// express.json(), and the signature is checked over JSON.stringify(req.body).
//   WEBHOOK_SECRET=whsec_... PORT=9000 node express/receiver.js
// It verifies webhooks created with json_numbers => 'javascript' (docs/MIGRATING.md): their
// bodies are written the way JSON.stringify writes them back (199.90 → 199.9), so the
// re-serialized body is byte for byte the one that was signed. Prints one JSON line per request.
const crypto = require('node:crypto');
const express = require('express');

const secret = process.env.WEBHOOK_SECRET;
const port = Number(process.env.PORT || 9000);
const app = express();

function reply(res, status, entry) {
  console.log(JSON.stringify(entry));
  res.status(status).json(entry);
}

app.post('/webhooks', express.json(), (req, res) => {
  const given = req.get('X-Webhook-Signature') || '';
  const expected = 'sha256=' + crypto.createHmac('sha256', secret)
    .update(JSON.stringify(req.body))
    .digest('hex');
  // Constant-time comparison of equal-length buffers.
  const ok = given.length === expected.length &&
    crypto.timingSafeEqual(Buffer.from(given), Buffer.from(expected));
  if (!ok) {
    return reply(res, 401, { result: 'rejected', reason: given ? 'bad signature' : 'missing signature' });
  }
  reply(res, 200, { result: 'accepted', event: req.body.event, event_id: req.body.id, data: req.body.data });
});

app.listen(port, '127.0.0.1', () => console.log(`listening on http://127.0.0.1:${port}`));
