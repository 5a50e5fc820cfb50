-- $1..$3: deliveries the worker recorded as failed for good this round (webhook, delivery,
-- event; operational ones left out): each is announced on NOTIFY webhook_ext and queued as
-- webhook_ext.delivery.failed for the webhooks that name that event's prefix.
SELECT @extschema@.webhook_notify_operational('webhook_ext.delivery.failed',
           pg_catalog.jsonb_build_object('type', 'delivery.failed', 'webhook_id', f.webhook_id,
                                         'delivery_id', f.delivery_id, 'event', f.event))
  FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS f(webhook_id, delivery_id, event)
 WHERE f.delivery_id = ANY (ARRAY(
       SELECT d.id FROM @extschema@.webhook_delivery_store AS d
        WHERE d.id = ANY ($2::bigint[]) AND d.status = 'failed'))
