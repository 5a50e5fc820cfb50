-- $1: first id to look at, $2: how many rows, $3: webhook.retention in seconds.
-- The oldest deliveries by id, in small batches (never a long lock on rows writers touch):
-- those finished before the retention are deleted (their attempts and due rows by trigger).
-- Returns the last id looked at, how many were deleted, and whether the next batch may hold
-- more: a full batch whose last (newest) delivery is older than the retention. Ids follow
-- creation, so the first batch that ends inside the retention ends the pass.
WITH scanned AS MATERIALIZED (
    SELECT s.id, s.created_at FROM @extschema@.webhook_delivery_store AS s
     WHERE s.id >= $1::bigint
     ORDER BY s.id
     LIMIT $2::bigint),
purged AS (
    DELETE FROM @extschema@.webhook_delivery_store AS d
     WHERE d.id = ANY (ARRAY(SELECT scanned.id FROM scanned))
       AND d.status IN ('succeeded', 'failed', 'cancelled')
       AND d.updated_at < pg_catalog.now() - $3::float8 * interval '1 second'
    RETURNING d.id)
SELECT (SELECT pg_catalog.max(scanned.id) FROM scanned),
       (SELECT pg_catalog.count(*) FROM purged),
       (SELECT pg_catalog.count(*) = $2::bigint FROM scanned)
       AND (SELECT last.created_at < pg_catalog.now() - $3::float8 * interval '1 second'
              FROM scanned AS last ORDER BY last.id DESC LIMIT 1)
