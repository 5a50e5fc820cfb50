-- $1..$4: deliveries of ordered webhooks the round did not send (delivery, webhook, key,
-- whether an earlier delivery with the same key holds it back). Held back: due at 9999-12-31,
-- until the earlier one ends (release_keys.sql); otherwise due now, like park.sql. The key
-- on the due row makes later deliveries with that key wait behind this one.
INSERT INTO @extschema@.webhook_delivery_due AS due (delivery_id, webhook_id, due_at, event_key)
SELECT p.delivery_id, p.webhook_id,
       CASE WHEN p.held THEN '9999-12-31 00:00:00+00'::timestamptz ELSE pg_catalog.now() END,
       p.event_key
  FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bool[])
       AS p(delivery_id, webhook_id, event_key, held)
    ON CONFLICT (delivery_id) DO UPDATE SET due_at = excluded.due_at, event_key = excluded.event_key
