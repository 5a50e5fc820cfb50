-- webhook_ext 0.4.0 → 0.5.0. The same objects as sql/schema.sql and sql/api.sql create for a
-- fresh 0.5.0 install; tests/operations.rs compares the two.

-- Issue 14: per-partner control (SPEC §9).
ALTER TABLE webhook
    ADD COLUMN ordered boolean NOT NULL DEFAULT false,
    ADD COLUMN filter jsonb,
    ADD COLUMN max_per_second numeric,
    ADD COLUMN no_retry_statuses integer[];
-- NULL for every delivery queued before: no key, so none is held back by ordering.
ALTER TABLE webhook_delivery_store ADD COLUMN event_key text;
ALTER TABLE webhook_delivery_due ADD COLUMN event_key text;
CREATE INDEX webhook_delivery_due_key_idx ON webhook_delivery_due (webhook_id, event_key, delivery_id)
    WHERE event_key IS NOT NULL;

CREATE FUNCTION "webhook_controls_changed_on_commit"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'webhook_controls_changed_on_commit_wrapper';


CREATE OR REPLACE FUNCTION webhook_after_deactivate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- An attempt in flight finishes and is recorded as usual.
    UPDATE @extschema@.webhook_delivery_store
       SET status = 'cancelled',
           next_attempt_at = NULL,
           error = coalesce('webhook disabled: ' || NEW.disabled_reason, 'webhook deactivated'),
           updated_at = now()
     WHERE webhook_id = NEW.id AND status = 'pending'
       AND NOT @extschema@.webhook_delivery_in_flight(id);
    DELETE FROM @extschema@.webhook_delivery_due AS due
     WHERE due.webhook_id = NEW.id
       AND NOT @extschema@.webhook_delivery_in_flight(due.delivery_id);
    -- Disabled by the worker (410 Gone, the failure streak), or by hand with a reason.
    IF NEW.disabled_reason IS NOT NULL THEN
        PERFORM @extschema@.webhook_notify_operational('webhook_ext.webhook.disabled',
            jsonb_build_object('type', 'webhook.disabled', 'webhook_id', NEW.id,
                               'reason', NEW.disabled_reason));
    END IF;
    RETURN NULL;
END
$$;

-- No longer ordered: deliveries waiting behind an earlier one with the same key are due now
-- (a retry keeps its time).
CREATE FUNCTION webhook_after_unordered() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE @extschema@.webhook_delivery_due AS due
       SET due_at = least(due.due_at, now()), event_key = NULL
     WHERE due.webhook_id = NEW.id AND due.event_key IS NOT NULL;
    PERFORM @extschema@.webhook_due_changed_on_commit();
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_after_unordered
    AFTER UPDATE OF ordered ON webhook
    FOR EACH ROW WHEN (OLD.ordered AND NOT NEW.ordered)
    EXECUTE FUNCTION webhook_after_unordered();

CREATE OR REPLACE VIEW webhook_delivery AS
SELECT d.id, d.webhook_id, d.event_id, d.event, d.body,
       CASE WHEN d.status = 'pending' AND @extschema@.webhook_delivery_in_flight(d.id)
            THEN 'delivering' ELSE d.status END AS status,
       d.attempts, d.attempts_before_replay, d.next_attempt_at, d.response_status,
       d.response_body, d.error, d.duration_ms, d.created_at, d.updated_at, d.delivered_at,
       d.event_key
  FROM @extschema@.webhook_delivery_store AS d;


-- Operational events (webhook_ext.webhook.disabled, webhook_ext.delivery.failed): a NOTIFY on
-- channel webhook_ext, and a delivery to each active webhook that names a webhook_ext.
-- pattern explicitly ('*' alone does not match them).
CREATE FUNCTION webhook_notify_operational(event text, data jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_event_id uuid := gen_random_uuid();
    body text;
    queued integer;
BEGIN
    PERFORM pg_notify('webhook_ext', webhook_notify_operational.data::text);
    body := @extschema@.webhook_envelope(
        new_event_id::text, webhook_notify_operational.event,
        floor(extract(epoch FROM clock_timestamp()))::bigint,
        webhook_notify_operational.data::text, NULL);
    PERFORM pg_current_xact_id();
    -- Each webhook's body in its own format, as webhook_enqueue makes it.
    INSERT INTO @extschema@.webhook_delivery_store (webhook_id, event_id, event, body)
    SELECT w.id, new_event_id, webhook_notify_operational.event,
           CASE WHEN w.envelope IS NULL AND w.json_numbers = 'exact' THEN body
                ELSE @extschema@.webhook_reshape(body, w.envelope::text, w.json_numbers) END
      FROM @extschema@.webhook AS w
     WHERE w.active
       AND @extschema@.webhook_events_match(
               ARRAY(SELECT p FROM unnest(w.events) AS p WHERE starts_with(p, 'webhook_ext.')),
               webhook_notify_operational.event)
       AND (w.filter IS NULL OR webhook_notify_operational.data @> w.filter);
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM @extschema@.webhook_wake_on_commit();
    END IF;
    RETURN queued;
END
$$;

-- Cancel one pending delivery. The next delivery of an ordered webhook with the same key,
-- waiting behind it, becomes due.
CREATE FUNCTION webhook_cancel(id bigint) RETURNS webhook_delivery
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target @extschema@.webhook_delivery_store;
    cancelled @extschema@.webhook_delivery;
BEGIN
    SELECT * INTO target FROM @extschema@.webhook_delivery_store AS d
     WHERE d.id = webhook_cancel.id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'delivery % does not exist', webhook_cancel.id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF target.status = 'pending' AND @extschema@.webhook_delivery_in_flight(target.id) THEN
        RAISE EXCEPTION 'delivery % is being delivered; cancel it if it is pending again', target.id
            USING ERRCODE = 'object_in_use';
    END IF;
    IF target.status <> 'pending' THEN
        RAISE EXCEPTION 'delivery % is already %: only a pending delivery can be cancelled',
            target.id, target.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE @extschema@.webhook_delivery_store AS d
       SET status = 'cancelled', next_attempt_at = NULL,
           error = 'cancelled by webhook_cancel()', updated_at = now()
     WHERE d.id = target.id;
    DELETE FROM @extschema@.webhook_delivery_due AS due WHERE due.delivery_id = target.id;
    IF target.event_key IS NOT NULL THEN
        UPDATE @extschema@.webhook_delivery_due AS due SET due_at = now()
         WHERE due.delivery_id = (SELECT min(n.delivery_id) FROM @extschema@.webhook_delivery_due AS n
                                   WHERE n.webhook_id = target.webhook_id
                                     AND n.event_key = target.event_key)
           AND due.due_at = '9999-12-31 00:00:00+00';
        IF FOUND THEN
            PERFORM @extschema@.webhook_due_changed_on_commit();
        END IF;
    END IF;
    SELECT * INTO cancelled FROM @extschema@.webhook_delivery AS d WHERE d.id = target.id;
    RETURN cancelled;
END
$$;
COMMENT ON FUNCTION webhook_cancel(bigint) IS
    'Cancel one pending delivery (55006 while in flight, 55000 when already finished)';

-- Cancel a webhook's pending deliveries created in [since, until) (since NULL: from the
-- first); those in flight finish as usual. Returns how many were cancelled.
CREATE FUNCTION webhook_cancel_pending(
    webhook_id bigint,
    since      timestamptz DEFAULT NULL,
    until      timestamptz DEFAULT now()
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cancelled_count integer;
BEGIN
    IF until IS NULL OR since > until THEN
        RAISE EXCEPTION 'invalid since/until: until is required and since must not be after it'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM FROM @extschema@.webhook AS w WHERE w.id = webhook_cancel_pending.webhook_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_cancel_pending.webhook_id
            USING ERRCODE = 'no_data_found';
    END IF;
    WITH cancelled AS (
        UPDATE @extschema@.webhook_delivery_store AS d
           SET status = 'cancelled', next_attempt_at = NULL,
               error = 'cancelled by webhook_cancel_pending()', updated_at = now()
         WHERE d.webhook_id = webhook_cancel_pending.webhook_id
           AND d.status = 'pending'
           AND (since IS NULL OR d.created_at >= since) AND d.created_at < until
           AND NOT @extschema@.webhook_delivery_in_flight(d.id)
        RETURNING d.id),
    dropped AS (
        DELETE FROM @extschema@.webhook_delivery_due AS due
         WHERE due.delivery_id IN (SELECT cancelled.id FROM cancelled))
    SELECT count(*) INTO cancelled_count FROM cancelled;
    -- Of an ordered webhook, the first delivery left of each key is due (the worker holds it
    -- back if an earlier one of that key is in flight).
    UPDATE @extschema@.webhook_delivery_due AS due SET due_at = now()
     WHERE due.delivery_id IN (SELECT min(n.delivery_id) FROM @extschema@.webhook_delivery_due AS n
                                WHERE n.webhook_id = webhook_cancel_pending.webhook_id
                                  AND n.event_key IS NOT NULL
                                GROUP BY n.event_key)
       AND due.due_at = '9999-12-31 00:00:00+00';
    PERFORM @extschema@.webhook_due_changed_on_commit();
    RETURN cancelled_count;
END
$$;
COMMENT ON FUNCTION webhook_cancel_pending(bigint, timestamptz, timestamptz) IS
    'Cancel a webhook''s pending deliveries created in [since, until); returns how many';

-- webhook_trigger_check('cliente', 'exclude=cpf,senha_hash'): the check of the trigger's
-- last argument that the trigger makes when it first fires, to run when creating it.
CREATE FUNCTION webhook_trigger_check(relation regclass, selection text) RETURNS boolean
LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'webhook_trigger_check_wrapper';
COMMENT ON FUNCTION webhook_trigger_check(regclass, text) IS
    'Check a webhook_trigger columns=/exclude= argument against a table (22023 naming an unknown column)';

REVOKE ALL ON FUNCTION webhook_notify_operational(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_after_unordered() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_cancel(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_cancel_pending(bigint, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_controls_changed_on_commit() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_trigger_check(regclass, text) FROM PUBLIC;

-- Issue 15: many databases (SPEC §10).
-- Every database served, from the launcher's shared memory; names from pg_database.
CREATE FUNCTION "webhook_cluster_process"() RETURNS TABLE (
	"database_oid" oid,
	"pid" INT,
	"running" bool,
	"queue_depth" bigint,
	"in_flight" INT,
	"last_error" TEXT
)
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'webhook_cluster_process_wrapper';

CREATE FUNCTION webhook_cluster_status() RETURNS TABLE (
    database     name,
    pid          integer,
    running      boolean,
    queue_depth  bigint,
    in_flight    integer,
    last_error   text
)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.datname, p.pid, p.running, p.queue_depth, p.in_flight, p.last_error
      FROM @extschema@.webhook_cluster_process() AS p
      JOIN pg_catalog.pg_database AS d ON d.oid OPERATOR(pg_catalog.=) p.database_oid
     ORDER BY d.datname;
$$;
COMMENT ON FUNCTION webhook_cluster_status() IS
    'Every database served: its worker pid, whether it runs, queue depth, in flight, last error';
REVOKE ALL ON FUNCTION webhook_cluster_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_cluster_process() FROM PUBLIC;

-- Issue 17: wire formats partners already verify (SPEC §11).
-- Every existing webhook keeps the format it had: the defaults are that format.
ALTER TABLE webhook
    ADD COLUMN envelope         jsonb,
    ADD COLUMN signature_format text NOT NULL DEFAULT 'sha256=hex',
    ADD COLUMN signature_input  text NOT NULL DEFAULT 'body',
    ADD COLUMN json_numbers     text NOT NULL DEFAULT 'exact';
COMMENT ON COLUMN webhook.envelope IS 'new names of the body''s top-level keys (id, event, timestamp, data), null to leave one out; NULL = none renamed';
COMMENT ON COLUMN webhook.signature_format IS 'sha256=hex | hex | secret | none: what the signature header carries';
COMMENT ON COLUMN webhook.signature_input IS 'body | python_sorted_json: what the signature header''s HMAC covers';
COMMENT ON COLUMN webhook.json_numbers IS 'exact | javascript: numbers as Postgres wrote them, or as JSON.stringify writes them back';

CREATE FUNCTION "webhook_check_wire_format"(
	"url" TEXT, /* Option < & str > */
	"secret" TEXT, /* Option < & str > */
	"envelope" TEXT, /* Option < & str > */
	"signature_format" TEXT, /* Option < & str > */
	"signature_input" TEXT, /* Option < & str > */
	"json_numbers" TEXT /* Option < & str > */
) RETURNS void
PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'webhook_check_wire_format_wrapper';

CREATE FUNCTION "webhook_reshape"(
	"body" TEXT, /* & str */
	"envelope" TEXT, /* Option < & str > */
	"json_numbers" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'webhook_reshape_wrapper';

-- A new signature: the old one is renamed, so that the roles granted it can be granted the
-- new one below, then dropped.
ALTER FUNCTION webhook_verify_endpoint(text, text, text) RENAME TO webhook_verify_endpoint_0_4_0;

CREATE FUNCTION "webhook_verify_endpoint"(
	"url" TEXT, /* & str */
	"secret" TEXT, /* & str */
	"headers" TEXT, /* & str */
	"signature_header" TEXT, /* & str */
	"signature_format" TEXT, /* & str */
	"signature_input" TEXT /* & str */
) RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'webhook_verify_endpoint_wrapper';
REVOKE ALL ON FUNCTION webhook_check_wire_format(text, text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_reshape(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_verify_endpoint(text, text, text, text, text, text) FROM PUBLIC;

-- Issues 14 and 17 both: webhook_create and webhook_update take every column as a named
-- argument, webhook_enqueue and webhook_emit take the event key, and the checks and the
-- queueing know the new columns. Functions with new signatures are made anew; the old ones
-- are renamed first, so that the roles granted them can be granted the new ones, then dropped.
ALTER FUNCTION webhook_create(text, text, text[], text, text, jsonb, boolean) RENAME TO webhook_create_0_4_0;
ALTER FUNCTION webhook_update(bigint, text, text, text[], jsonb, boolean) RENAME TO webhook_update_0_4_0;
ALTER FUNCTION webhook_enqueue(text, json, json) RENAME TO webhook_enqueue_0_4_0;
ALTER FUNCTION webhook_emit(text, jsonb) RENAME TO webhook_emit_0_4_0;

CREATE OR REPLACE FUNCTION webhook_before_write() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.url IS DISTINCT FROM OLD.url THEN
        RAISE EXCEPTION 'invalid url: the url of webhook % cannot be changed after creation', OLD.id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create a new webhook with webhook_create() and delete this one.';
    END IF;
    PERFORM @extschema@.webhook_check_subscription(
        NEW.url, NEW.secret, NEW.events, NEW.headers::text, NEW.signature_header);
    -- Only when they change: whether 'secret' may be sent depends on webhook.allowed_networks,
    -- which must not make the worker's own updates (disabling a webhook) fail later on.
    IF TG_OP = 'INSERT'
       OR (NEW.url, NEW.secret, NEW.envelope, NEW.signature_format, NEW.signature_input,
           NEW.json_numbers) IS DISTINCT FROM (OLD.url, OLD.secret, OLD.envelope,
           OLD.signature_format, OLD.signature_input, OLD.json_numbers) THEN
        PERFORM @extschema@.webhook_check_wire_format(
            NEW.url, NEW.secret, NEW.envelope::text, NEW.signature_format, NEW.signature_input,
            NEW.json_numbers);
    END IF;
    -- An envelope that renames nothing is the default one, which costs nothing to queue.
    IF NEW.envelope = '{}'::jsonb THEN
        NEW.envelope := NULL;
    END IF;
    IF NEW.retry_schedule IS NOT NULL AND (
           cardinality(NEW.retry_schedule) NOT BETWEEN 1 AND 50
        OR array_position(NEW.retry_schedule, NULL) IS NOT NULL
        OR EXISTS (SELECT 1 FROM unnest(NEW.retry_schedule) AS d
                    WHERE d < interval '0' OR d > interval '7 days')) THEN
        RAISE EXCEPTION 'invalid retry_schedule: it needs 1 to 50 delays, each between 0 and 7 days'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.ordered IS NULL THEN
        RAISE EXCEPTION 'invalid ordered: must be true or false, not NULL'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.filter IS NOT NULL AND jsonb_typeof(NEW.filter) <> 'object' THEN
        RAISE EXCEPTION 'invalid filter: it must be a JSON object such as {"tenant_id": 7}, or NULL for every event'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.max_per_second IS NOT NULL
       AND NOT (NEW.max_per_second > 0 AND NEW.max_per_second <= 100000) THEN
        RAISE EXCEPTION 'invalid max_per_second: it must be greater than 0 and at most 100000, or NULL for no limit'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.no_retry_statuses IS NOT NULL AND EXISTS (
           SELECT 1 FROM unnest(NEW.no_retry_statuses) AS s(status)
            WHERE s.status IS NULL OR s.status NOT BETWEEN 400 AND 599) THEN
        RAISE EXCEPTION 'invalid no_retry_statuses: each status must be between 400 and 599'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The worker keeps ordered webhooks and rate limits in memory: it reloads them after this
    -- transaction commits.
    IF TG_OP = 'INSERT' THEN
        IF NEW.ordered OR NEW.max_per_second IS NOT NULL THEN
            PERFORM @extschema@.webhook_controls_changed_on_commit();
        END IF;
    ELSIF NEW.ordered IS DISTINCT FROM OLD.ordered
       OR NEW.max_per_second IS DISTINCT FROM OLD.max_per_second
       OR (NEW.active IS DISTINCT FROM OLD.active
           AND (NEW.ordered OR NEW.max_per_second IS NOT NULL)) THEN
        PERFORM @extschema@.webhook_controls_changed_on_commit();
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
        IF NEW.active AND NOT OLD.active THEN
            NEW.disabled_reason := NULL;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION webhook_create(
    url              text,
    secret           text    DEFAULT NULL,
    events           text[]  DEFAULT '{*}',
    description      text    DEFAULT NULL,
    name             text    DEFAULT NULL,
    headers          jsonb   DEFAULT '{}',
    verify           boolean DEFAULT false,
    signature_header text    DEFAULT 'X-Webhook-Signature',
    envelope         jsonb   DEFAULT NULL,
    signature_format text    DEFAULT 'sha256=hex',
    signature_input  text    DEFAULT 'body',
    json_numbers     text    DEFAULT 'exact',
    ordered          boolean DEFAULT false,
    filter           jsonb   DEFAULT NULL,
    max_per_second   numeric DEFAULT NULL,
    no_retry_statuses integer[] DEFAULT NULL
) RETURNS webhook
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    created @extschema@.webhook;
    effective_secret text := coalesce(webhook_create.secret, @extschema@.webhook_generate_secret());
BEGIN
    -- Validate before any network traffic; the row trigger checks again on INSERT.
    PERFORM @extschema@.webhook_check_subscription(
        webhook_create.url, effective_secret, webhook_create.events,
        webhook_create.headers::text, webhook_create.signature_header);
    PERFORM @extschema@.webhook_check_wire_format(
        webhook_create.url, effective_secret, webhook_create.envelope::text,
        webhook_create.signature_format, webhook_create.signature_input,
        webhook_create.json_numbers);
    IF coalesce(webhook_create.verify, false) THEN
        PERFORM @extschema@.webhook_verify_endpoint(
            webhook_create.url, effective_secret, webhook_create.headers::text,
            webhook_create.signature_header, webhook_create.signature_format,
            webhook_create.signature_input);
    END IF;
    INSERT INTO @extschema@.webhook (url, secret, events, description, name, headers,
                                     signature_header, envelope, signature_format,
                                     signature_input, json_numbers,
                                     ordered, filter, max_per_second, no_retry_statuses)
    VALUES (webhook_create.url, effective_secret, webhook_create.events,
            webhook_create.description, webhook_create.name, webhook_create.headers,
            webhook_create.signature_header, webhook_create.envelope,
            webhook_create.signature_format, webhook_create.signature_input,
            webhook_create.json_numbers,
            webhook_create.ordered, webhook_create.filter, webhook_create.max_per_second,
            webhook_create.no_retry_statuses)
    RETURNING * INTO created;
    RETURN created;
END
$$;
COMMENT ON FUNCTION webhook_create(text, text, text[], text, text, jsonb, boolean, text, jsonb, text, text, text, boolean, jsonb, numeric, integer[]) IS
    'Register a webhook; a NULL secret is generated and returned once in the row';

CREATE FUNCTION webhook_update(
    id               bigint,
    description      text    DEFAULT NULL,
    secret           text    DEFAULT NULL,
    events           text[]  DEFAULT NULL,
    headers          jsonb   DEFAULT NULL,
    active           boolean DEFAULT NULL,
    signature_header text    DEFAULT NULL,
    envelope         jsonb   DEFAULT NULL,
    signature_format text    DEFAULT NULL,
    signature_input  text    DEFAULT NULL,
    json_numbers     text    DEFAULT NULL,
    ordered          boolean DEFAULT NULL,
    filter           jsonb   DEFAULT NULL,
    max_per_second   numeric DEFAULT NULL,
    no_retry_statuses integer[] DEFAULT NULL
) RETURNS webhook
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    updated @extschema@.webhook;
BEGIN
    -- envelope => '{}' renames nothing: back to the default envelope (stored as NULL).
    UPDATE @extschema@.webhook AS w
       SET description      = coalesce(webhook_update.description, w.description),
           secret           = coalesce(webhook_update.secret, w.secret),
           events           = coalesce(webhook_update.events, w.events),
           headers          = coalesce(webhook_update.headers, w.headers),
           active           = coalesce(webhook_update.active, w.active),
           signature_header = coalesce(webhook_update.signature_header, w.signature_header),
           envelope         = coalesce(webhook_update.envelope, w.envelope),
           signature_format = coalesce(webhook_update.signature_format, w.signature_format),
           signature_input  = coalesce(webhook_update.signature_input, w.signature_input),
           json_numbers     = coalesce(webhook_update.json_numbers, w.json_numbers),
           ordered          = coalesce(webhook_update.ordered, w.ordered),
           filter           = coalesce(webhook_update.filter, w.filter),
           max_per_second   = coalesce(webhook_update.max_per_second, w.max_per_second),
           no_retry_statuses = coalesce(webhook_update.no_retry_statuses, w.no_retry_statuses)
     WHERE w.id = webhook_update.id
    RETURNING w.* INTO updated;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_update.id
            USING ERRCODE = 'no_data_found';
    END IF;
    -- The secret is shown once, at creation (or by webhook_rotate_secret): never again.
    updated.secret := NULL;
    updated.previous_secret := NULL;
    RETURN updated;
END
$$;
COMMENT ON FUNCTION webhook_update(bigint, text, text, text[], jsonb, boolean, text, jsonb, text, text, text, boolean, jsonb, numeric, integer[]) IS
    'Change a webhook; NULL arguments leave their field unchanged (clear filter, max_per_second or no_retry_statuses with UPDATE webhook SET ... = NULL)';

CREATE FUNCTION webhook_enqueue(event text, data json, changes json DEFAULT NULL, key text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_event_id uuid := gen_random_uuid();
    body text;
    queued integer;
BEGIN
    -- Builds (and validates) the body even when nobody subscribes: a bad event name is an
    -- error whether or not a webhook listens to it.
    -- The emission time, truncated: the timestamp is never later than the commit.
    body := @extschema@.webhook_envelope(
        new_event_id::text, webhook_enqueue.event,
        floor(extract(epoch FROM clock_timestamp()))::bigint,
        webhook_enqueue.data::text, webhook_enqueue.changes::text);
    -- The transaction id first, the delivery ids after: the worker's walk relies on it
    -- (crates/delivery/src/walk.rs).
    PERFORM pg_current_xact_id();
    -- Each webhook's body: the event's own unless it renames keys or rewrites numbers. The
    -- data as jsonb is computed (once) only if an active webhook has a filter; the filter
    -- comes first: with a webhook per tenant it rules out the others before their patterns
    -- are matched.
    INSERT INTO @extschema@.webhook_delivery_store (webhook_id, event_id, event, body, event_key)
    SELECT w.id, new_event_id, webhook_enqueue.event,
           CASE WHEN w.envelope IS NULL AND w.json_numbers = 'exact' THEN body
                ELSE @extschema@.webhook_reshape(body, w.envelope::text, w.json_numbers) END,
           webhook_enqueue.key
      FROM @extschema@.webhook AS w
     WHERE w.active
       AND (w.filter IS NULL
            OR (SELECT webhook_enqueue.data::jsonb) OPERATOR(pg_catalog.@>) w.filter)
       AND @extschema@.webhook_events_match(w.events, webhook_enqueue.event);
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM @extschema@.webhook_wake_on_commit();
    END IF;
    RETURN queued;
END
$$;

CREATE FUNCTION webhook_emit(event text, data jsonb, key text DEFAULT NULL) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT @extschema@.webhook_enqueue(event, data::json, NULL, key);
$$;
COMMENT ON FUNCTION webhook_emit(text, jsonb, text) IS
    'Queue an event for every active webhook whose events match (and filter, if any); key is its event_key; returns how many deliveries';

REVOKE ALL ON FUNCTION webhook_create(text, text, text[], text, text, jsonb, boolean, text, jsonb, text, text, text, boolean, jsonb, numeric, integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_update(bigint, text, text, text[], jsonb, boolean, text, jsonb, text, text, text, boolean, jsonb, numeric, integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_enqueue(text, json, json, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_emit(text, jsonb, text) FROM PUBLIC;


-- Whoever could run the old signature can run the new one (docs/SECURITY.md's admin role).
DO $grants$
DECLARE
    renamed record;
    grantee text;
BEGIN
    FOR renamed IN
        SELECT old_function::regprocedure AS old_function, new_function
          FROM (VALUES
            ('@extschema@.webhook_verify_endpoint_0_4_0(text, text, text)',
             '@extschema@.webhook_verify_endpoint(text, text, text, text, text, text)'),
            ('@extschema@.webhook_create_0_4_0(text, text, text[], text, text, jsonb, boolean)',
             '@extschema@.webhook_create(text, text, text[], text, text, jsonb, boolean, text, jsonb, text, text, text, boolean, jsonb, numeric, integer[])'),
            ('@extschema@.webhook_update_0_4_0(bigint, text, text, text[], jsonb, boolean)',
             '@extschema@.webhook_update(bigint, text, text, text[], jsonb, boolean, text, jsonb, text, text, text, boolean, jsonb, numeric, integer[])'),
            ('@extschema@.webhook_enqueue_0_4_0(text, json, json)',
             '@extschema@.webhook_enqueue(text, json, json, text)'),
            ('@extschema@.webhook_emit_0_4_0(text, jsonb)',
             '@extschema@.webhook_emit(text, jsonb, text)')
          ) AS pairs(old_function, new_function)
    LOOP
        FOR grantee IN
            SELECT DISTINCT a.grantee::regrole::text
              FROM pg_catalog.pg_proc AS p, pg_catalog.aclexplode(p.proacl) AS a
             WHERE p.oid = renamed.old_function
               AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
        LOOP
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s',
                                      renamed.new_function, grantee);
        END LOOP;
    END LOOP;
END
$grants$;
DROP FUNCTION webhook_verify_endpoint_0_4_0(text, text, text);
DROP FUNCTION webhook_create_0_4_0(text, text, text[], text, text, jsonb, boolean);
DROP FUNCTION webhook_update_0_4_0(bigint, text, text, text[], jsonb, boolean);
DROP FUNCTION webhook_enqueue_0_4_0(text, json, json);
DROP FUNCTION webhook_emit_0_4_0(text, jsonb);

-- Issue 16: a codebase the next engineer can carry.
-- webhook_worker_process() has the Rust name it has in SQL now, and so its own C symbol; the
-- old one (webhook_worker_status_wrapper) stays in the library for installations not yet
-- updated (src/api/legacy.rs).
CREATE OR REPLACE FUNCTION webhook_worker_process() RETURNS TABLE (
	"running" bool,
	"pid" INT,
	"database" TEXT,
	"started_at" timestamp with time zone,
	"queue_depth" bigint,
	"in_flight" bigint,
	"attempts_total" bigint,
	"last_error" TEXT,
	"last_error_at" timestamp with time zone,
	"message" TEXT
)
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'webhook_worker_process_wrapper';
