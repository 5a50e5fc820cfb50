-- webhook_ext 0.2.0 → 0.3.0: cheaper writes of deliveries (the trigger path and the worker).
-- The same objects as sql/schema.sql and sql/api.sql create for a fresh 0.3.0 install.

-- Every write of a delivery paid for this index (a random UUID lands on a random page);
-- nothing of the extension reads it. docs/OPERATIONS.md shows how to add one back.
DROP INDEX webhook_delivery_event_id_idx;

-- The lease index no longer matches a bare `status = 'delivering'` (see sql/schema.sql).
DROP INDEX webhook_delivery_leased_idx;
CREATE INDEX webhook_delivery_leased_idx ON webhook_delivery (lease_until)
    WHERE status = 'delivering' AND lease_until IS NOT NULL;

-- The trigger is native (src/api/trigger.rs): same arguments, same events, same bodies, a
-- fraction of the cost per written row. CREATE OR REPLACE keeps the function's oid, so the
-- application's triggers use it at once; it drops the pinned search_path (see sql/api.sql).
CREATE OR REPLACE FUNCTION webhook_trigger() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', 'webhook_trigger_wrapper';
