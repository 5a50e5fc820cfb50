-- $1, $2: due rows (delivery id, due time in µs) whose delivery is gone or no longer pending.
-- Compared on the due time too: a replay that made the row due again since is kept.
DELETE FROM @extschema@.webhook_delivery_due AS due
 WHERE due.delivery_id = ANY ($1::bigint[])
   AND (due.delivery_id, (extract(epoch FROM due.due_at) * 1000000)::bigint)
       IN (SELECT * FROM unnest($1::bigint[], $2::bigint[]))
