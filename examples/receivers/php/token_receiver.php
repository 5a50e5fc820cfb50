<?php
// A PHP receiver of a shared token: the X-Webhook-Token header must equal the secret.
//   WEBHOOK_SECRET=... php -S 127.0.0.1:9000 php/token_receiver.php
// It accepts webhooks created with signature_format => 'secret', signature_header =>
// 'X-Webhook-Token' and envelope => '{"event": "evento", "data": "dados", "id": null}'
// (docs/MIGRATING.md). A token proves who sent the request, not that the body is intact: use
// it over https only (webhook_ext refuses it over plain http:// outside
// webhook.allowed_networks). getenv(), not $_ENV: $_ENV is empty under Debian's default
// variables_order. Prints one JSON line per request.

function reply(int $status, array $entry): never
{
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode($entry);
    file_put_contents('php://stdout', json_encode($entry) . "\n");
    exit;
}

$token = getenv('WEBHOOK_SECRET');
$given = $_SERVER['HTTP_X_WEBHOOK_TOKEN'] ?? '';
if ($given === '') {
    reply(401, ['result' => 'rejected', 'reason' => 'missing token']);
}
if (!hash_equals($token, $given)) {  // constant time
    reply(401, ['result' => 'rejected', 'reason' => 'bad token']);
}
$event = json_decode(file_get_contents('php://input'), true);
reply(200, ['result' => 'accepted', 'event' => $event['evento']]);
