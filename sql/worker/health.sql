-- $1..$4: per webhook, whether the batch had a success, a failure, and the failures since
-- its last success; $5: webhook.disable_after_failures (0: never).
-- The streak of failed deliveries: a success in the batch restarts it. Crossing the
-- threshold disables the webhook, which cancels its pending deliveries.
WITH delta AS (
    SELECT * FROM unnest($1::bigint[], $2::bool[], $3::bool[], $4::int[])
        AS d(webhook_id, succeeded, failed, failures)),
health AS (
    INSERT INTO @extschema@.webhook_health AS h
           (webhook_id, consecutive_failures, last_success_at, last_failure_at)
    SELECT d.webhook_id, d.failures, CASE WHEN d.succeeded THEN pg_catalog.now() END,
           CASE WHEN d.failed THEN pg_catalog.now() END
      FROM delta AS d JOIN @extschema@.webhook AS w ON w.id = d.webhook_id
    ON CONFLICT (webhook_id) DO UPDATE SET
       consecutive_failures = CASE WHEN excluded.last_success_at IS NOT NULL
           THEN excluded.consecutive_failures
           ELSE h.consecutive_failures + excluded.consecutive_failures END,
       last_success_at = coalesce(excluded.last_success_at, h.last_success_at),
       last_failure_at = coalesce(excluded.last_failure_at, h.last_failure_at)
    RETURNING h.webhook_id, h.consecutive_failures)
UPDATE @extschema@.webhook AS w
   SET active = false,
       disabled_reason = pg_catalog.format(
           'disabled automatically on %s after %s consecutive failed deliveries',
           pg_catalog.to_char(pg_catalog.now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
           health.consecutive_failures)
  FROM health
 WHERE w.id = health.webhook_id AND w.active AND $5::int > 0
   AND health.consecutive_failures >= $5::int
