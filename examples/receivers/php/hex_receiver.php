<?php
// A PHP receiver of bare-hex signatures: X-Signature = hash_hmac('sha256', raw body, secret).
//   WEBHOOK_SECRET=... php -S 127.0.0.1:9000 php/hex_receiver.php
// It verifies webhooks created with signature_format => 'hex' and signature_header =>
// 'X-Signature' (docs/MIGRATING.md). The secret comes from getenv(): $_ENV is empty under
// Debian's default variables_order ("GPCS"). Prints one JSON line per request.

function reply(int $status, array $entry): never
{
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($entry);
    file_put_contents('php://stdout', json_encode($entry) . "\n");
    exit;
}

$secret = getenv('WEBHOOK_SECRET');
$raw = file_get_contents('php://input');          // the exact bytes that were signed
$given = $_SERVER['HTTP_X_SIGNATURE'] ?? '';
if ($given === '') {
    reply(401, ['result' => 'rejected', 'reason' => 'missing signature']);
}
if (!hash_equals(hash_hmac('sha256', $raw, $secret), $given)) {  // constant time
    reply(401, ['result' => 'rejected', 'reason' => 'bad signature']);
}
$event = json_decode($raw, true);
reply(200, ['result' => 'accepted', 'event' => $event['event'], 'event_id' => $event['id']]);
