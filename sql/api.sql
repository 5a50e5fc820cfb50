-- webhook_ext SQL API. Runs last in CREATE EXTENSION (pgrx "finalize"), after the Rust
-- functions it calls (webhook_check_subscription, webhook_envelope, ...) exist.
-- Every name is schema-qualified with @extschema@ so that the caller's search_path cannot
-- redirect it; SECURITY DEFINER functions also pin their own search_path.

------------------------------------------------------------------------------------------
-- Validation: the same checks for the functions and for plain INSERT/UPDATE on webhook.
------------------------------------------------------------------------------------------
CREATE FUNCTION webhook_before_write() RETURNS trigger
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

CREATE TRIGGER webhook_before_write
    BEFORE INSERT OR UPDATE ON webhook
    FOR EACH ROW EXECUTE FUNCTION webhook_before_write();

-- A webhook switched off keeps nothing queued: its pending deliveries become 'cancelled'
-- (they can be retried by hand, or replayed, once it is active again). Like the functions
-- below that write deliveries, it runs as the extension's owner: roles that manage webhooks
-- are granted the view webhook_delivery, not the tables behind it (docs/SECURITY.md).
CREATE FUNCTION webhook_after_deactivate() RETURNS trigger
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

CREATE TRIGGER webhook_after_deactivate
    AFTER UPDATE OF active ON webhook
    FOR EACH ROW WHEN (OLD.active AND NOT NEW.active)
    EXECUTE FUNCTION webhook_after_deactivate();

-- Switched back on: the failure streak that disabled it starts over.
CREATE FUNCTION webhook_after_reactivate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE @extschema@.webhook_health SET consecutive_failures = 0 WHERE webhook_id = NEW.id;
    -- Its due rows (retries, replays) are the worker's to take again.
    PERFORM @extschema@.webhook_due_changed_on_commit();
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_after_reactivate
    AFTER UPDATE OF active ON webhook
    FOR EACH ROW WHEN (NOT OLD.active AND NEW.active)
    EXECUTE FUNCTION webhook_after_reactivate();

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

------------------------------------------------------------------------------------------
-- What users read. A delivery is 'delivering' while the worker (or webhook_retry in some
-- session) has an attempt of it in flight: that is known in shared memory, not stored.
------------------------------------------------------------------------------------------
CREATE VIEW webhook_delivery AS
SELECT d.id, d.webhook_id, d.event_id, d.event, d.body,
       CASE WHEN d.status = 'pending' AND @extschema@.webhook_delivery_in_flight(d.id)
            THEN 'delivering' ELSE d.status END AS status,
       d.attempts, d.attempts_before_replay, d.next_attempt_at, d.response_status,
       d.response_body, d.error, d.duration_ms, d.created_at, d.updated_at, d.delivered_at,
       d.event_key
  FROM @extschema@.webhook_delivery_store AS d;
COMMENT ON VIEW webhook_delivery IS 'webhook_ext: one row per (event, subscriber) with its latest delivery state';
REVOKE ALL ON webhook_delivery FROM PUBLIC;

-- Per-webhook health. Counts come from the webhook's deliveries (those not yet purged by
-- webhook.retention); durations from the last attempt of its last 1000 deliveries; last
-- success, last failure and the failure streak from webhook_health.
CREATE VIEW webhook_stats AS
SELECT
    w.id                                                      AS webhook_id,
    w.name,
    w.url,
    w.active,
    coalesce(d.total, 0)                                      AS deliveries_total,
    coalesce(d.succeeded, 0)                                  AS deliveries_succeeded,
    coalesce(d.failed, 0)                                     AS deliveries_failed,
    coalesce(d.pending, 0)                                    AS deliveries_pending,
    coalesce(d.cancelled, 0)                                  AS deliveries_cancelled,
    round(d.succeeded::numeric / nullif(d.succeeded + d.failed, 0), 4) AS success_rate,
    a.avg_duration_ms,
    a.p95_duration_ms,
    coalesce(d.retries, 0)                                    AS retries,
    h.last_success_at,
    h.last_failure_at,
    coalesce(h.consecutive_failures, 0)                       AS consecutive_failures
FROM @extschema@.webhook w
LEFT JOIN @extschema@.webhook_health h ON h.webhook_id = w.id
LEFT JOIN LATERAL (
    SELECT
        count(*)                                                    AS total,
        count(*) FILTER (WHERE status = 'succeeded')                AS succeeded,
        count(*) FILTER (WHERE status = 'failed')                   AS failed,
        count(*) FILTER (WHERE status = 'pending')                  AS pending,
        count(*) FILTER (WHERE status = 'cancelled')                AS cancelled,
        sum(greatest(attempts - 1, 0))                              AS retries
    FROM @extschema@.webhook_delivery_store
    WHERE webhook_id = w.id
) d ON true
LEFT JOIN LATERAL (
    SELECT
        round(avg(recent.duration_ms), 1)                                      AS avg_duration_ms,
        percentile_cont(0.95) WITHIN GROUP (ORDER BY recent.duration_ms)       AS p95_duration_ms
    FROM (SELECT duration_ms FROM @extschema@.webhook_delivery_store
           WHERE webhook_id = w.id AND duration_ms IS NOT NULL
           ORDER BY id DESC LIMIT 1000) recent
) a ON true;
COMMENT ON VIEW webhook_stats IS 'webhook_ext: delivery health per webhook';
REVOKE ALL ON webhook_stats FROM PUBLIC;

------------------------------------------------------------------------------------------
-- Deleting: what a foreign key with ON DELETE CASCADE would do, without the lock on the
-- webhook row that such a key takes for every queued event.
------------------------------------------------------------------------------------------
CREATE FUNCTION webhook_after_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM @extschema@.webhook_delivery_store WHERE webhook_id = OLD.id;
    DELETE FROM @extschema@.webhook_delivery_due WHERE webhook_id = OLD.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_after_delete
    AFTER DELETE ON webhook
    FOR EACH ROW EXECUTE FUNCTION webhook_after_delete();

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

CREATE FUNCTION webhook_delivery_after_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- `= ANY (ARRAY(...))`: a probe of each key, also in the worker's session, which plans
    -- without nested loops (a join would read the whole attempt table's key).
    DELETE FROM @extschema@.webhook_attempt
     WHERE delivery_id = ANY (ARRAY(SELECT gone.id FROM deleted_deliveries AS gone));
    DELETE FROM @extschema@.webhook_delivery_due
     WHERE delivery_id = ANY (ARRAY(SELECT gone.id FROM deleted_deliveries AS gone));
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_delivery_after_delete
    AFTER DELETE ON webhook_delivery_store
    REFERENCING OLD TABLE AS deleted_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_delivery_after_delete();

------------------------------------------------------------------------------------------
-- Subscriptions
------------------------------------------------------------------------------------------
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

CREATE FUNCTION webhook_delete(id bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM @extschema@.webhook AS w WHERE w.id = webhook_delete.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_delete.id
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION webhook_delete(bigint) IS
    'Delete a webhook and all its deliveries and attempts (irreversible)';

CREATE FUNCTION webhook_rotate_secret(
    id         bigint,
    new_secret text     DEFAULT NULL,
    grace      interval DEFAULT '24 hours'
) RETURNS webhook
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rotated @extschema@.webhook;
BEGIN
    IF grace IS NULL OR grace < interval '0' OR grace > interval '30 days' THEN
        RAISE EXCEPTION 'invalid grace: it must be between 0 and 30 days'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE @extschema@.webhook AS w
       SET previous_secret = CASE WHEN grace > interval '0' THEN w.secret END,
           previous_secret_expires_at = CASE WHEN grace > interval '0' THEN now() + grace END,
           secret = coalesce(webhook_rotate_secret.new_secret, @extschema@.webhook_generate_secret())
     WHERE w.id = webhook_rotate_secret.id
    RETURNING w.* INTO rotated;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_rotate_secret.id
            USING ERRCODE = 'no_data_found';
    END IF;
    rotated.previous_secret := NULL;
    RETURN rotated;
END
$$;
COMMENT ON FUNCTION webhook_rotate_secret(bigint, text, interval) IS
    'Replace the signing secret; the old one keeps signing (Standard Webhooks header) during grace';

------------------------------------------------------------------------------------------
-- Events
------------------------------------------------------------------------------------------
-- Queue one delivery per active webhook whose patterns match. `data` is JSON text: a row from
-- row_to_json() keeps its column order in the body. `changes` becomes data.alteracoes; `key`
-- is the delivery's event_key. A webhook with a filter gets the event only if data contains it.
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

-- Row-level AFTER trigger: webhook_trigger('cliente') emits cliente.created/updated/deleted;
-- webhook_trigger('cliente.criado', 'cliente.atualizado', 'cliente.excluido') names them.
-- Native (src/api/trigger.rs): it runs once per written row of the application. It queues
-- like webhook_enqueue() with one statement that names everything with this schema, so it
-- needs no pinned search_path (whose save and restore per row cost more than the queueing).
CREATE FUNCTION webhook_trigger() RETURNS trigger
LANGUAGE c SECURITY DEFINER AS 'MODULE_PATHNAME', 'webhook_trigger_wrapper';
-- webhook_trigger_check('cliente', 'exclude=cpf,senha_hash'): the check of the trigger's
-- last argument that the trigger makes when it first fires, to run when creating it.
CREATE FUNCTION webhook_trigger_check(relation regclass, selection text) RETURNS boolean
LANGUAGE c STRICT STABLE AS 'MODULE_PATHNAME', 'webhook_trigger_check_wrapper';
COMMENT ON FUNCTION webhook_trigger_check(regclass, text) IS
    'Check a webhook_trigger columns=/exclude= argument against a table (22023 naming an unknown column)';

COMMENT ON FUNCTION webhook_trigger() IS
    'AFTER ... FOR EACH ROW trigger: one prefix, or three event names for INSERT, UPDATE, DELETE';

------------------------------------------------------------------------------------------
-- Deliveries
------------------------------------------------------------------------------------------
CREATE FUNCTION webhook_retry(id bigint) RETURNS webhook_delivery
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    retried @extschema@.webhook_delivery;
BEGIN
    -- One attempt now, in this session; recorded as manual. Errors P0002 / 55006.
    PERFORM @extschema@.webhook_deliver_now(webhook_retry.id);
    SELECT * INTO retried FROM @extschema@.webhook_delivery AS d WHERE d.id = webhook_retry.id;
    RETURN retried;
END
$$;
COMMENT ON FUNCTION webhook_retry(bigint) IS
    'Make one delivery attempt now, in this session, and return the updated delivery';

-- Re-queue finished deliveries of one webhook (same event id and body, the retry schedule
-- starts over). The worker's per-endpoint limit (half of webhook.concurrency) bounds how
-- many of them are in flight at once, however many are replayed.
CREATE FUNCTION webhook_replay(
    webhook_id bigint,
    since      timestamptz,
    until      timestamptz DEFAULT now(),
    status     text        DEFAULT 'failed'
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target @extschema@.webhook;
    replayed integer;
BEGIN
    IF since IS NULL OR until IS NULL OR since > until THEN
        RAISE EXCEPTION 'invalid since/until: both are required and since must not be after until'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF status IS NULL OR status NOT IN ('failed', 'cancelled', 'succeeded') THEN
        RAISE EXCEPTION 'invalid status: replay takes failed, cancelled or succeeded deliveries, not %',
            coalesce(quote_literal(status), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO target FROM @extschema@.webhook AS w WHERE w.id = webhook_replay.webhook_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_replay.webhook_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT target.active THEN
        RAISE EXCEPTION 'webhook % is inactive; enable it first with webhook_update(%, active => true)',
            target.id, target.id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    WITH requeued AS (
        UPDATE @extschema@.webhook_delivery_store AS d
           SET status = 'pending',
               next_attempt_at = now(),
               attempts_before_replay = d.attempts,
               updated_at = now()
         WHERE d.webhook_id = webhook_replay.webhook_id
           AND d.status = webhook_replay.status
           AND d.created_at >= since AND d.created_at < until
        RETURNING d.id, d.webhook_id)
    INSERT INTO @extschema@.webhook_delivery_due AS due (delivery_id, webhook_id, due_at)
    SELECT requeued.id, requeued.webhook_id, now() FROM requeued
    ON CONFLICT (delivery_id) DO UPDATE SET due_at = excluded.due_at;
    GET DIAGNOSTICS replayed = ROW_COUNT;
    IF replayed > 0 THEN
        PERFORM @extschema@.webhook_due_changed_on_commit();
    END IF;
    RETURN replayed;
END
$$;
COMMENT ON FUNCTION webhook_replay(bigint, timestamptz, timestamptz, text) IS
    'Re-queue a webhook''s deliveries created in [since, until) with the given status; returns how many';

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

CREATE FUNCTION webhook_worker_status() RETURNS TABLE (
    running         boolean,
    pid             integer,
    database        text,
    started_at      timestamptz,
    queue_depth     bigint,
    in_flight       bigint,
    attempts_total  bigint,
    last_error      text,
    last_error_at   timestamptz,
    message         text,
    settings        jsonb
)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.*, @extschema@.webhook_worker_settings()
      FROM @extschema@.webhook_worker_process() AS p;
$$;
COMMENT ON FUNCTION webhook_worker_status() IS
    'Is a worker running, its pid, queue depth, in flight, last error and the settings it uses';

-- Every database served in the cluster (shared memory; names from pg_database, which leaves
-- out a database dropped meanwhile). queue_depth is as the worker last counted it: asked, each
-- worker counts at its maintenance (every 5 s) for a minute; NULL until then.
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

------------------------------------------------------------------------------------------
-- Privileges: nothing is executable by PUBLIC. docs/SECURITY.md shows the GRANTs.
------------------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION webhook_before_write() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_after_deactivate() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_after_reactivate() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_after_delete() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_delivery_after_delete() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_replay(bigint, timestamptz, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_create(text, text, text[], text, text, jsonb, boolean, text, jsonb, text, text, text, boolean, jsonb, numeric, integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_update(bigint, text, text, text[], jsonb, boolean, text, jsonb, text, text, text, boolean, jsonb, numeric, integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_delete(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_rotate_secret(bigint, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_enqueue(text, json, json, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_emit(text, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_notify_operational(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_after_unordered() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_cancel(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_cancel_pending(bigint, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_controls_changed_on_commit() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_trigger_check(regclass, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_trigger() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_retry(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_check_subscription(text, text, text[], text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_check_wire_format(text, text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_reshape(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_generate_secret() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_events_match(text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_envelope(text, text, bigint, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_wake_on_commit() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_due_changed_on_commit() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_verify_endpoint(text, text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_deliver_now(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_ping(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_worker_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_worker_process() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_worker_settings() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_cluster_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_cluster_process() FROM PUBLIC;
