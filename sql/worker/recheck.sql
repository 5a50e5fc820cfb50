-- $1, $2: the walk's gaps, as id ranges (from, to): the rows now there, with the columns of
-- walk.sql. One primary-key range scan per gap (OFFSET 0 keeps the planner from flattening
-- the LATERAL subquery into a join, which without nested loops reads the table whole).
SELECT d.id, d.webhook_id, d.event_id::text, d.event,
       CASE WHEN d.status = 'pending' AND d.attempts = 0 THEN d.body END,
       d.attempts, d.attempts - d.attempts_before_replay,
       d.status = 'pending' AND d.attempts = 0,
       (SELECT CASE WHEN NOT w.active THEN 'inactive' WHEN w.ordered THEN 'ordered' ELSE 'active' END
          FROM @extschema@.webhook AS w WHERE w.id = d.webhook_id),
       NULL::bigint,
       d.event_key
  FROM unnest($1::bigint[], $2::bigint[]) AS gap(from_id, to_id)
 CROSS JOIN LATERAL (
       SELECT * FROM @extschema@.webhook_delivery_store AS s
        WHERE s.id BETWEEN gap.from_id AND gap.to_id
       OFFSET 0) AS d
 ORDER BY d.id
