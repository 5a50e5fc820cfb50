-- webhook_ext 0.3.0 → 0.4.0: the write path (issue 12). A delivery is queued with one narrow
-- append and delivered with one HOT update plus one attempt row; nothing durable marks it
-- as claimed. The same objects as sql/schema.sql and sql/api.sql create for a fresh 0.4.0
-- install, and every delivery keeps its id, state and attempts.

-- Writers wait until the copy below is done: no delivery committed meanwhile is left behind.
LOCK TABLE webhook_delivery IN EXCLUSIVE MODE;

CREATE FUNCTION "webhook_delivery_in_flight"(
	"delivery_id" bigint /* i64 */
) RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'webhook_delivery_in_flight_wrapper';

CREATE FUNCTION "webhook_due_changed_on_commit"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'webhook_due_changed_on_commit_wrapper';
REVOKE ALL ON FUNCTION webhook_due_changed_on_commit() FROM PUBLIC;

-- One row per (event, subscriber): what users read as the view webhook_delivery below.
-- Built so that queueing an event is one narrow append and delivering it one HOT update
-- plus one attempt row (bench/ANALYSIS.md §8):
-- - no foreign key: it would lock the webhook row for every queued event; deleting a webhook
--   deletes its deliveries by trigger (webhook_after_delete), and the worker drops a delivery
--   whose webhook is gone instead of sending it;
-- - no index on a column that changes after queueing (status, next_attempt_at, ...), and room
--   on every page (fillfactor) for the new version of each row: the outcome of an attempt is
--   a HOT update that logs only the columns it changed, which come last for that reason;
-- - nothing durable marks a delivery as pending: the worker finds new deliveries by walking
--   the primary key (webhook_delivery_frontier says how far it has seen), and only
--   deliveries waiting for a retry or for a busy endpoint get a row in webhook_delivery_due.
-- The worker's walk needs ids handed out in the order the inserts run: the sequence must
-- keep CACHE 1 (its default).
CREATE TABLE webhook_delivery_store (
    id               bigserial PRIMARY KEY,
    webhook_id       bigint NOT NULL,
    event_id         uuid NOT NULL,
    event            text NOT NULL,
    body             text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Written by the worker after each attempt: 'pending', 'succeeded', 'failed' or
    -- 'cancelled' ('delivering' is not stored). No CHECK constraint: only the extension
    -- writes it, and Postgres re-reads and re-plans a CHECK's expression every time an
    -- INSERT starts, which is once per queued event here (a fifth of the trigger's cost).
    status           text NOT NULL DEFAULT 'pending',
    attempts         integer NOT NULL DEFAULT 0,
    -- webhook_replay() starts the retry schedule over: the schedule position is
    -- attempts - attempts_before_replay.
    attempts_before_replay integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz DEFAULT now(),
    response_status  integer,
    response_body    text,
    error            text,
    duration_ms      integer,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
) WITH (fillfactor = 40);
COMMENT ON TABLE webhook_delivery_store IS 'webhook_ext: deliveries as stored; read them through the view webhook_delivery';
-- Per webhook: its statistics, cancelling its pending deliveries, deleting it.
CREATE INDEX webhook_delivery_store_webhook_idx ON webhook_delivery_store (webhook_id, id);
-- No index on event_id: every queued event would pay for it (a random UUID lands on a
-- random page). docs/OPERATIONS.md shows how to add one for lookups by event.

-- Deliveries the worker did not send on its walk: retries waiting for their time, deliveries
-- replayed or retried by hand, and the backlog of an endpoint that cannot take more yet.
-- One row per pending delivery at most; none on the happy path.
CREATE TABLE webhook_delivery_due (
    delivery_id  bigint PRIMARY KEY,
    webhook_id   bigint NOT NULL,
    due_at       timestamptz NOT NULL
);
COMMENT ON TABLE webhook_delivery_due IS 'webhook_ext: pending deliveries the worker will take by due time (retries, replays, backlogs)';
CREATE INDEX webhook_delivery_due_webhook_idx ON webhook_delivery_due (webhook_id, due_at);

-- How far the worker's walk of webhook_delivery_store has seen: every delivery with an id up
-- to frontier was sent, recorded or moved to webhook_delivery_due. One row.
CREATE TABLE webhook_delivery_frontier (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    frontier   bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE webhook_delivery_frontier IS 'webhook_ext: how far the worker has seen queued deliveries (one row)';
INSERT INTO webhook_delivery_frontier DEFAULT VALUES;


-- Every delivery, with its id. One that was being delivered is pending again (its attempt
-- was cut short by this update, or by a crash before it).
INSERT INTO webhook_delivery_store
       (id, webhook_id, event_id, event, body, created_at, status, attempts,
        attempts_before_replay, next_attempt_at, response_status, response_body, error,
        duration_ms, updated_at, delivered_at)
SELECT id, webhook_id, event_id, event, body, created_at,
       CASE WHEN status = 'delivering' THEN 'pending' ELSE status END,
       attempts, attempts_before_replay,
       CASE WHEN status = 'delivering' THEN now() ELSE next_attempt_at END,
       response_status, response_body, error, duration_ms, updated_at, delivered_at
  FROM webhook_delivery
 ORDER BY id;
SELECT pg_catalog.setval('webhook_delivery_store_id_seq', s.last_value, s.is_called)
  FROM webhook_delivery_id_seq AS s;
-- The walk starts after the last of them; whatever of them is pending is due.
UPDATE webhook_delivery_frontier SET frontier = (SELECT coalesce(max(id), 0) FROM webhook_delivery_store);
INSERT INTO webhook_delivery_due (delivery_id, webhook_id, due_at)
SELECT id, webhook_id, next_attempt_at FROM webhook_delivery_store WHERE status = 'pending';

-- The old table and what depends on it step aside; they go once their replacements have
-- taken over the privileges users granted on them.
ALTER TABLE webhook_attempt DROP CONSTRAINT webhook_attempt_delivery_id_fkey;
ALTER VIEW webhook_stats RENAME TO webhook_stats_0_3_0;
ALTER FUNCTION webhook_retry(bigint) RENAME TO webhook_retry_0_3_0;
ALTER TABLE webhook_delivery RENAME TO webhook_delivery_0_3_0;

-- An attempt row: its key is its only index.
ALTER TABLE webhook_attempt DROP CONSTRAINT webhook_attempt_pkey;
DROP INDEX webhook_attempt_delivery_idx;
DROP INDEX webhook_attempt_webhook_idx;
ALTER TABLE webhook_attempt ADD PRIMARY KEY (delivery_id, attempt);

SELECT pg_catalog.pg_extension_config_dump('webhook_delivery_store', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_delivery_store_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_delivery_due', '');
REVOKE ALL ON webhook_delivery_store, webhook_delivery_due, webhook_delivery_frontier FROM PUBLIC;
REVOKE ALL ON SEQUENCE webhook_delivery_store_id_seq FROM PUBLIC;

------------------------------------------------------------------------------------------
-- What users read. A delivery is 'delivering' while the worker (or webhook_retry in some
-- session) has an attempt of it in flight: that is known in shared memory, not stored.
------------------------------------------------------------------------------------------
CREATE VIEW webhook_delivery AS
SELECT d.id, d.webhook_id, d.event_id, d.event, d.body,
       CASE WHEN d.status = 'pending' AND @extschema@.webhook_delivery_in_flight(d.id)
            THEN 'delivering' ELSE d.status END AS status,
       d.attempts, d.attempts_before_replay, d.next_attempt_at, d.response_status,
       d.response_body, d.error, d.duration_ms, d.created_at, d.updated_at, d.delivered_at
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
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION webhook_after_reactivate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE @extschema@.webhook_health SET consecutive_failures = 0 WHERE webhook_id = NEW.id;
    -- Its due rows (retries, replays) are the worker's to take again.
    PERFORM @extschema@.webhook_due_changed_on_commit();
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION webhook_enqueue(event text, data json, changes json DEFAULT NULL)
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
    INSERT INTO @extschema@.webhook_delivery_store (webhook_id, event_id, event, body)
    SELECT w.id, new_event_id, webhook_enqueue.event, body
      FROM @extschema@.webhook AS w
     WHERE w.active AND @extschema@.webhook_events_match(w.events, webhook_enqueue.event);
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM @extschema@.webhook_wake_on_commit();
    END IF;
    RETURN queued;
END
$$;

CREATE OR REPLACE FUNCTION webhook_replay(
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

CREATE OR REPLACE FUNCTION webhook_worker_status() RETURNS TABLE (
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

REVOKE ALL ON FUNCTION webhook_retry(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_after_delete() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_delivery_after_delete() FROM PUBLIC;

-- Roles granted the old table, view or function keep what they were granted (copied as it
-- is: not recorded as the extension's initial privileges, so pg_dump still dumps them).
UPDATE pg_catalog.pg_class AS c
   SET relacl = (SELECT old.relacl FROM pg_catalog.pg_class AS old
                  WHERE old.oid = 'webhook_delivery_0_3_0'::regclass)
 WHERE c.oid = 'webhook_delivery'::regclass;
UPDATE pg_catalog.pg_class AS c
   SET relacl = (SELECT old.relacl FROM pg_catalog.pg_class AS old
                  WHERE old.oid = 'webhook_stats_0_3_0'::regclass)
 WHERE c.oid = 'webhook_stats'::regclass;
UPDATE pg_catalog.pg_proc AS p
   SET proacl = (SELECT old.proacl FROM pg_catalog.pg_proc AS old
                  WHERE old.oid = 'webhook_retry_0_3_0(bigint)'::regprocedure)
 WHERE p.oid = 'webhook_retry(bigint)'::regprocedure;

DROP VIEW webhook_stats_0_3_0;
DROP FUNCTION webhook_retry_0_3_0(bigint);
ALTER EXTENSION webhook_ext DROP TABLE webhook_delivery_0_3_0;
ALTER EXTENSION webhook_ext DROP SEQUENCE webhook_delivery_id_seq;
DROP TABLE webhook_delivery_0_3_0;
