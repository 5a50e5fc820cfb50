-- The outcomes of a batch of attempts, one array per column.
-- The delivery's new state is a HOT update (no index covers a column it changes); it is
-- written only if no other attempt was recorded since this one started (attempts moved) and,
-- for the worker's attempts, if the delivery is still pending (not cancelled meanwhile).
-- A delivery to be retried gets (or keeps) its due row; one that came from a due row and is
-- finished loses it. The attempt is always recorded, if its delivery still exists and no
-- attempt of that number or later is (a per-row probe of the attempt's key: ON CONFLICT
-- would log a second record for every attempt).
WITH o AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::bool[], $4::text[], $5::bigint[],
                                    $6::float8[], $7::int[], $8::int[], $9::text[], $10::text[],
                                    $11::bool[])
        AS o(delivery_id, attempt, manual, status, retry_delay_ms, started_at_epoch,
             duration_ms, response_status, response_body, error, from_due)),
updated AS (
    UPDATE @extschema@.webhook_delivery_store AS d
       SET status = o.status,
           attempts = o.attempt,
           next_attempt_at = CASE WHEN o.status = 'pending' THEN coalesce(
               pg_catalog.now() + o.retry_delay_ms * interval '1 millisecond', d.next_attempt_at) END,
           response_status = o.response_status,
           response_body = o.response_body,
           error = o.error,
           duration_ms = o.duration_ms,
           updated_at = pg_catalog.now(),
           delivered_at = CASE WHEN o.status = 'succeeded' THEN pg_catalog.now() ELSE d.delivered_at END
      FROM o
     WHERE d.id = ANY ($1::bigint[]) AND d.id = o.delivery_id
       AND d.attempts = o.attempt - 1
       AND (o.manual OR d.status = 'pending')
    RETURNING d.id, d.webhook_id, d.status, d.next_attempt_at),
retry AS (
    INSERT INTO @extschema@.webhook_delivery_due AS due (delivery_id, webhook_id, due_at)
    SELECT u.id, u.webhook_id, u.next_attempt_at FROM updated AS u WHERE u.status = 'pending'
    ON CONFLICT (delivery_id) DO UPDATE SET due_at = excluded.due_at),
finished AS (
    DELETE FROM @extschema@.webhook_delivery_due AS due
     WHERE due.delivery_id = ANY (ARRAY(
           SELECT u.id FROM updated AS u JOIN o ON o.delivery_id = u.id
            WHERE u.status <> 'pending' AND (o.from_due OR o.manual))))
INSERT INTO @extschema@.webhook_attempt AS a
       (delivery_id, webhook_id, attempt, manual, started_at, duration_ms, response_status,
        response_body, error)
SELECT o.delivery_id, d.webhook_id, o.attempt, o.manual, pg_catalog.to_timestamp(o.started_at_epoch),
       o.duration_ms, o.response_status, o.response_body, o.error
  FROM o JOIN @extschema@.webhook_delivery_store AS d
    ON d.id = o.delivery_id AND d.id = ANY ($1::bigint[])
 WHERE o.attempt > coalesce((SELECT pg_catalog.max(earlier.attempt) FROM @extschema@.webhook_attempt AS earlier
                              WHERE earlier.delivery_id = o.delivery_id), 0)
