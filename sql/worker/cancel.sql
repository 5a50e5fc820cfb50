-- $1: deliveries the walk found for an inactive webhook (queued while it was being switched
-- off): cancelled, as webhook_after_deactivate cancels the others.
UPDATE @extschema@.webhook_delivery_store AS d
   SET status = 'cancelled', next_attempt_at = NULL, error = 'webhook deactivated',
       updated_at = pg_catalog.now()
 WHERE d.id = ANY ($1::bigint[]) AND d.status = 'pending'
