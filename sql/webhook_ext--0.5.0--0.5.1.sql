-- webhook_ext 0.5.0 → 0.5.1. The same objects as sql/schema.sql and sql/api.sql create for a
-- fresh 0.5.1 install; tests/operations.rs compares the two.

------------------------------------------------------------------------------------------
-- Issue 12, the INSERT rate: backends keep a copy of the active webhooks for
-- webhook_trigger() (src/api/subscribers.rs), invalidated by this statement trigger at every
-- change of webhook rows. Until this update the trigger reads webhook per row, as in 0.5.0.
------------------------------------------------------------------------------------------
-- Backends keep a copy of the active webhooks for webhook_trigger() (src/api/subscribers.rs):
-- any change of webhook rows invalidates the table's cache entry, which reaches every backend
-- when the change commits, and each reads the webhooks again. ENABLE ALWAYS: it must fire
-- under session_replication_role = replica too (logical replication, restores).
CREATE FUNCTION webhook_subscribers_changed() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'webhook_subscribers_changed_wrapper';
COMMENT ON FUNCTION webhook_subscribers_changed() IS
    'webhook_ext: tells every backend, at commit, that the webhooks changed';
REVOKE ALL ON FUNCTION webhook_subscribers_changed() FROM PUBLIC;

CREATE TRIGGER webhook_subscribers_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON webhook
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_subscribers_changed();
ALTER TABLE webhook ENABLE ALWAYS TRIGGER webhook_subscribers_changed;
