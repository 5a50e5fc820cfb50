-- Deliveries still to send (pending, in flight included): the due rows, and the deliveries
-- the walk has not passed yet (none below its saved frontier is pending without a due row).
SELECT (SELECT pg_catalog.count(*) FROM @extschema@.webhook_delivery_due)
     + (SELECT pg_catalog.count(*) FROM @extschema@.webhook_delivery_store AS d
         WHERE d.id > (SELECT f.frontier FROM @extschema@.webhook_delivery_frontier AS f)
           AND d.status = 'pending' AND d.attempts = 0
           AND NOT EXISTS (SELECT FROM @extschema@.webhook_delivery_due AS due
                            WHERE due.delivery_id = d.id))
