-- $1: webhooks the worker has deliveries queued or in flight for, after a commit deleted
-- webhooks: those that still exist. The worker withdraws what it queued for the others.
SELECT w.id FROM @extschema@.webhook AS w
 WHERE w.id = ANY ($1::bigint[])
