-- webhook_ext 0.1.0 → 0.2.0: endpoint health and automatic disabling, webhook_replay,
-- webhook_stats without full scans, the worker's settings in webhook_worker_status().
-- The same objects as sql/schema.sql and sql/api.sql create for a fresh 0.2.0 install.

-- Deliveries: replay restarts the retry schedule; stats read an index only.
ALTER TABLE webhook_delivery ADD COLUMN attempts_before_replay integer NOT NULL DEFAULT 0;
DROP INDEX webhook_delivery_webhook_created_idx;
CREATE INDEX webhook_delivery_webhook_created_idx ON webhook_delivery (webhook_id, created_at)
    INCLUDE (status, attempts);

-- Attempts know their webhook, for recent-duration statistics.
ALTER TABLE webhook_attempt ADD COLUMN webhook_id bigint;
UPDATE webhook_attempt AS a SET webhook_id = d.webhook_id
  FROM webhook_delivery AS d WHERE d.id = a.delivery_id;
CREATE INDEX webhook_attempt_webhook_idx ON webhook_attempt (webhook_id, id);

-- Endpoint health, kept by the worker (one writer, batched): consecutive failed deliveries
-- drive the automatic disabling (webhook.disable_after_failures).
CREATE TABLE webhook_health (
    webhook_id            bigint PRIMARY KEY REFERENCES webhook (id) ON DELETE CASCADE,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    last_success_at       timestamptz,
    last_failure_at       timestamptz
);
COMMENT ON TABLE webhook_health IS 'webhook_ext: per-webhook delivery health, maintained by the worker';
SELECT pg_catalog.pg_extension_config_dump('webhook_health', '');
REVOKE ALL ON webhook_health FROM PUBLIC;

-- Health so far, from the deliveries kept.
INSERT INTO webhook_health (webhook_id, consecutive_failures, last_success_at, last_failure_at)
SELECT w.id,
       (SELECT count(*) FROM webhook_delivery f
         WHERE f.webhook_id = w.id AND f.status = 'failed'
           AND f.updated_at > coalesce(s.last_success_at, '-infinity')),
       s.last_success_at,
       (SELECT max(f.updated_at) FROM webhook_delivery f WHERE f.webhook_id = w.id AND f.status = 'failed')
  FROM webhook w
  CROSS JOIN LATERAL (SELECT max(d.delivered_at) AS last_success_at FROM webhook_delivery d
                       WHERE d.webhook_id = w.id AND d.status = 'succeeded') s;

DROP VIEW webhook_stats;
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
FROM webhook w
LEFT JOIN webhook_health h ON h.webhook_id = w.id
LEFT JOIN LATERAL (
    SELECT
        count(*)                                                    AS total,
        count(*) FILTER (WHERE status = 'succeeded')                AS succeeded,
        count(*) FILTER (WHERE status = 'failed')                   AS failed,
        count(*) FILTER (WHERE status IN ('pending', 'delivering')) AS pending,
        count(*) FILTER (WHERE status = 'cancelled')                AS cancelled,
        sum(greatest(attempts - 1, 0))                              AS retries
    FROM webhook_delivery
    WHERE webhook_id = w.id
) d ON true
LEFT JOIN LATERAL (
    SELECT
        round(avg(recent.duration_ms), 1)                                      AS avg_duration_ms,
        percentile_cont(0.95) WITHIN GROUP (ORDER BY recent.duration_ms)       AS p95_duration_ms
    FROM (SELECT duration_ms FROM webhook_attempt
           WHERE webhook_id = w.id AND duration_ms IS NOT NULL
           ORDER BY id DESC LIMIT 1000) recent
) a ON true;
COMMENT ON VIEW webhook_stats IS 'webhook_ext: delivery health per webhook';
REVOKE ALL ON webhook_stats FROM PUBLIC;

-- Switched back on: the failure streak that disabled it starts over.
CREATE FUNCTION webhook_after_reactivate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE @extschema@.webhook_health SET consecutive_failures = 0 WHERE webhook_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_after_reactivate
    AFTER UPDATE OF active ON webhook
    FOR EACH ROW WHEN (NOT OLD.active AND NEW.active)
    EXECUTE FUNCTION webhook_after_reactivate();

-- Re-queue finished deliveries of one webhook (same event id and body, the retry schedule
-- starts over). The worker's per-endpoint limit (half of webhook.concurrency) bounds how
-- many of them are in flight at once, however many are replayed.
CREATE FUNCTION webhook_replay(
    webhook_id bigint,
    since      timestamptz,
    until      timestamptz DEFAULT now(),
    status     text        DEFAULT 'failed'
) RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
    UPDATE @extschema@.webhook_delivery AS d
       SET status = 'pending',
           next_attempt_at = now(),
           attempts_before_replay = d.attempts,
           updated_at = now()
     WHERE d.webhook_id = webhook_replay.webhook_id
       AND d.status = webhook_replay.status
       AND d.created_at >= since AND d.created_at < until;
    GET DIAGNOSTICS replayed = ROW_COUNT;
    IF replayed > 0 THEN
        PERFORM @extschema@.webhook_wake_on_commit();
    END IF;
    RETURN replayed;
END
$$;
COMMENT ON FUNCTION webhook_replay(bigint, timestamptz, timestamptz, text) IS
    'Re-queue a webhook''s deliveries created in [since, until) with the given status; returns how many';

-- The C function of 0.1.0's webhook_worker_status() keeps its symbol under a new name; the
-- public function now adds the worker's settings.
ALTER FUNCTION webhook_worker_status() RENAME TO webhook_worker_process;
CREATE FUNCTION "webhook_worker_settings"() RETURNS jsonb
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'webhook_worker_settings_wrapper';

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
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.*, @extschema@.webhook_worker_settings()
      FROM @extschema@.webhook_worker_process() AS p;
$$;
COMMENT ON FUNCTION webhook_worker_status() IS
    'Is a worker running, its pid, queue depth, in flight, last error and the settings it uses';

REVOKE ALL ON FUNCTION webhook_after_reactivate() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_replay(bigint, timestamptz, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_worker_status() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_worker_process() FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_worker_settings() FROM PUBLIC;
