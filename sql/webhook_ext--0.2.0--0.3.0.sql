-- webhook_ext 0.2.0 → 0.3.0: cheaper writes of deliveries (the trigger path and the worker).
-- The same objects as sql/schema.sql and sql/api.sql create for a fresh 0.3.0 install.

-- Every write of a delivery paid for this index (a random UUID lands on a random page);
-- nothing of the extension reads it. docs/OPERATIONS.md shows how to add one back.
DROP INDEX webhook_delivery_event_id_idx;
