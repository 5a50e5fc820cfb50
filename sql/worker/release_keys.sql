-- $1, $2: (webhook, key) of deliveries of ordered webhooks that ended (succeeded, failed):
-- the next delivery with that key, held back behind them, is due now.
UPDATE @extschema@.webhook_delivery_due AS due SET due_at = pg_catalog.now()
 WHERE due.delivery_id = ANY (ARRAY(
       SELECT (SELECT pg_catalog.min(n.delivery_id) FROM @extschema@.webhook_delivery_due AS n
                WHERE n.event_key IS NOT NULL
                  AND n.webhook_id = k.webhook_id AND n.event_key = k.event_key)
         FROM unnest($1::bigint[], $2::text[]) AS k(webhook_id, event_key)))
   AND due.due_at = '9999-12-31 00:00:00+00'::timestamptz
