-- $1: a delivery id. webhook_retry's attempt, in any status: the row stays locked until the
-- caller's transaction ends. Columns of walk.sql, then its status.
SELECT d.id, d.webhook_id, d.event_id::text, d.event, d.body,
       d.attempts, d.attempts - d.attempts_before_replay,
       true,
       (SELECT CASE WHEN NOT w.active THEN 'inactive' WHEN w.ordered THEN 'ordered' ELSE 'active' END
          FROM @extschema@.webhook AS w WHERE w.id = d.webhook_id),
       NULL::bigint,
       d.event_key,
       d.status
  FROM @extschema@.webhook_delivery_store AS d
 WHERE d.id = $1::bigint
   FOR UPDATE
