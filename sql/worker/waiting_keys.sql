-- $1, $2: webhooks and keys of deliveries of ordered webhooks the round found. Per (webhook,
-- key) with a due row (a retry waiting, or a delivery held back), the lowest such delivery:
-- a later delivery with that key waits behind it. Reads only the partial index on keys.
SELECT due.webhook_id, due.event_key, pg_catalog.min(due.delivery_id)
  FROM @extschema@.webhook_delivery_due AS due
 WHERE due.event_key IS NOT NULL
   AND due.webhook_id = ANY ($1::bigint[]) AND due.event_key = ANY ($2::text[])
 GROUP BY due.webhook_id, due.event_key
