-- $1, $2: deliveries of ordered webhooks that got (or keep) a due row this round without
-- their key (a retry recorded by record.sql, a delivery parked by park.sql): with it, later
-- deliveries with the same key wait behind them.
UPDATE @extschema@.webhook_delivery_due AS due SET event_key = k.event_key
  FROM unnest($1::bigint[], $2::text[]) AS k(delivery_id, event_key)
 WHERE due.delivery_id = ANY ($1::bigint[]) AND due.delivery_id = k.delivery_id
