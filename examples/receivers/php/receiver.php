<?php
// A minimal webhook_ext receiver for PHP >= 8.1 (php-cli, no extra extensions).
//   WEBHOOK_SECRET=whsec_... php -S 127.0.0.1:8000 receiver.php
// Optional: MAX_AGE_SECONDS (default 300), DEDUPE_DIR (default: <temp dir>/webhook_ext-seen).
// Prints one JSON line per request on the server's stdout.

function reply(int $status, array $entry): never
{
    // The body is stored by the sender (webhook_delivery.response_body): say why.
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($entry);
    file_put_contents('php://stdout', json_encode($entry) . "\n"); // echo goes to the client
    exit;
}

function reject(string $reason): never
{
    reply(401, ['result' => 'rejected', 'reason' => $reason]);
}

$secret = getenv('WEBHOOK_SECRET');
$maxAge = (int) (getenv('MAX_AGE_SECONDS') ?: 300);
if (!$secret) {
    reply(500, ['result' => 'rejected', 'reason' => 'WEBHOOK_SECRET is not set']);
}
if ($_SERVER['REQUEST_METHOD'] !== 'POST') {
    reply(405, ['result' => 'rejected', 'reason' => 'not POST']);
}

// HMAC over the RAW body bytes as received (php://input). Never over re-serialized JSON
// (json_encode(json_decode(...))): key order, spacing and escapes would differ.
$raw = file_get_contents('php://input');
$given = $_SERVER['HTTP_X_WEBHOOK_SIGNATURE'] ?? ''; // or the webhook's signature_header
if ($given === '') {
    reject('missing signature');
}
$expected = 'sha256=' . hash_hmac('sha256', $raw, $secret);
// Constant-time comparison: `===` returns at the first differing byte, and that timing
// lets an attacker find a valid signature byte by byte.
if (!hash_equals($expected, $given)) {
    reject('bad signature');
}

// X-Webhook-Timestamp is the time of this attempt (retries get a fresh one). A request
// older than the window is a replay of an old capture. The sha256= signature does not
// cover this header, so the dedupe below is what really stops replays.
$ts = $_SERVER['HTTP_X_WEBHOOK_TIMESTAMP'] ?? '';
if (!ctype_digit($ts) || abs(time() - (int) $ts) > $maxAge) {
    reject('stale timestamp');
}

// Dedupe on the event id: same as X-Event-ID, but taken from the signed body. Each request
// of PHP starts with empty memory, so the seen ids are marker files: fopen mode 'x' creates
// one atomically and fails if it exists. In production: a unique key in your database,
// written in the same transaction as the work.
$event = json_decode($raw, true, flags: JSON_THROW_ON_ERROR);
$entry = ['event' => $event['event'], 'event_id' => $event['id']];
$dir = getenv('DEDUPE_DIR') ?: sys_get_temp_dir() . '/webhook_ext-seen';
is_dir($dir) || @mkdir($dir, 0700, true);
$path = $dir . '/' . hash('sha256', $event['id']);
$marker = @fopen($path, 'x');
if ($marker === false && file_exists($path)) {
    reply(200, ['result' => 'duplicate'] + $entry);
}
if ($marker === false) { // 5xx: the sender retries later
    reply(500, ['result' => 'error', 'reason' => "cannot write to $dir"]);
}
fclose($marker);

// Answer 2xx at once and do the real work afterwards (a job queue): the sender gives up
// after webhook.timeout (5 s) and retries.
reply(200, ['result' => 'accepted'] + $entry);
