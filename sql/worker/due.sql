-- $1: how many rows at most; $2, $3: the known webhooks and how many due rows to read for
-- each (its room plus what it has in flight from here, which the worker skips); $4: the
-- room of the others.
-- Per active webhook, its due rows oldest first: one slow endpoint never takes every slot,
-- and the cost does not grow with the backlog. A due row whose delivery is gone or no longer
-- pending comes back as not deliverable, with its due time (µs), for the worker to delete.
-- The deliveries are read by `id = ANY (...)`: one primary-key probe each, whatever the
-- statistics say (the worker plans without nested loops, which a join would need).
WITH known(webhook_id, room) AS (SELECT * FROM unnest($2::bigint[], $3::int[])),
room AS (
    SELECT w.id AS webhook_id, coalesce(k.room, $4::int) AS room, w.ordered
      FROM @extschema@.webhook AS w
      LEFT JOIN known AS k ON k.webhook_id = w.id
     WHERE w.active AND coalesce(k.room, $4::int) > 0),
picked AS MATERIALIZED (
    SELECT next.delivery_id, r.webhook_id, next.due_at, r.ordered
      FROM room AS r
     CROSS JOIN LATERAL (
           SELECT due.delivery_id, due.due_at FROM @extschema@.webhook_delivery_due AS due
            WHERE due.webhook_id = r.webhook_id AND due.due_at <= pg_catalog.now()
            ORDER BY due.due_at
            LIMIT r.room) AS next
     LIMIT $1::bigint)
SELECT p.delivery_id, p.webhook_id, d.event_id::text, d.event,
       CASE WHEN d.status = 'pending' THEN d.body END,
       d.attempts, d.attempts - d.attempts_before_replay,
       coalesce(d.status = 'pending', false),
       CASE WHEN p.ordered THEN 'ordered' ELSE 'active' END,
       (extract(epoch FROM p.due_at) * 1000000)::bigint,
       d.event_key
  FROM picked AS p
  LEFT JOIN (SELECT * FROM @extschema@.webhook_delivery_store
              WHERE id = ANY (ARRAY(SELECT picked.delivery_id FROM picked))) AS d
    ON d.id = p.delivery_id
 ORDER BY p.due_at
