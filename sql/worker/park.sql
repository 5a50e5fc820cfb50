-- $1: delivery ids, $2: their webhooks. Deliveries the walk passed without sending (their
-- endpoint could not take them yet, or the pool handed them back): due now.
INSERT INTO @extschema@.webhook_delivery_due AS due (delivery_id, webhook_id, due_at)
SELECT p.delivery_id, p.webhook_id, pg_catalog.now()
  FROM unnest($1::bigint[], $2::bigint[]) AS p(delivery_id, webhook_id)
    ON CONFLICT (delivery_id) DO NOTHING
