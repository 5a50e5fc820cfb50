-- $1: every delivery up to this id is sent, recorded or due.
UPDATE @extschema@.webhook_delivery_frontier AS f SET frontier = $1::bigint
 WHERE f.frontier <> $1::bigint
