SELECT f.frontier FROM @extschema@.webhook_delivery_frontier AS f
