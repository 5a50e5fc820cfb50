-- $1: the walk's cursor (last id seen), $2: how many rows at most.
-- Every row after the cursor, in id order, deliverable or not (a row that is there is not a
-- gap). Only a delivery never attempted and still pending is the walk's to send: anything
-- else pending (retries, replays) is in webhook_delivery_due. The body is read only for it.
-- The event_key orders an ordered webhook's deliveries. Whether the webhook is ordered (its
-- state: NULL when it is gone) is read by the same statement, so in the snapshot that sees
-- the deliveries: a webhook made ordered just before its first events never looks unordered
-- to the round that finds them.
-- The subquery keeps the plan a primary-key range scan whatever the statistics say.
SELECT d.id, d.webhook_id, d.event_id::text, d.event,
       CASE WHEN d.status = 'pending' AND d.attempts = 0 THEN d.body END,
       d.attempts, d.attempts - d.attempts_before_replay,
       d.status = 'pending' AND d.attempts = 0,
       (SELECT CASE WHEN NOT w.active THEN 'inactive' WHEN w.ordered THEN 'ordered' ELSE 'active' END
          FROM @extschema@.webhook AS w WHERE w.id = d.webhook_id),
       NULL::bigint,
       d.event_key
  FROM (SELECT * FROM @extschema@.webhook_delivery_store
         WHERE id > $1::bigint
         ORDER BY id
         LIMIT $2::bigint) AS d
 ORDER BY d.id
