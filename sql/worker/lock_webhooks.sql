-- $1: the webhooks whose health or state this round writes. Locked first, in id order, so
-- that the round takes its locks in the order a DELETE of a webhook does (the webhook row,
-- then its health row by the foreign key's cascade, then its deliveries). A webhook being
-- deleted is skipped, not waited for: the round writes nothing for it, and neither waits on
-- the other.
SELECT w.id FROM @extschema@.webhook AS w
 WHERE w.id = ANY ($1::bigint[])
 ORDER BY w.id
   FOR KEY SHARE OF w SKIP LOCKED
