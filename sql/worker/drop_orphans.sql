-- $1: deliveries the walk found for a webhook that no longer exists (queued while it was
-- being deleted): deleted, as webhook_after_delete deleted the others.
DELETE FROM @extschema@.webhook_delivery_store AS d
 WHERE d.id = ANY ($1::bigint[])
   AND NOT EXISTS (SELECT FROM @extschema@.webhook AS w WHERE w.id = d.webhook_id)
