-- webhook_ext tables, indexes and views. Runs first in CREATE EXTENSION (pgrx "bootstrap"),
-- inside the schema chosen by CREATE EXTENSION ... SCHEMA (default: first of search_path).

-- One row per subscription.
CREATE TABLE webhook (
    id                          bigserial PRIMARY KEY,
    name                        text,
    url                         text NOT NULL,
    description                 text,
    secret                      text NOT NULL,
    -- The secret replaced by webhook_rotate_secret(); it keeps signing until it expires.
    previous_secret             text,
    previous_secret_expires_at  timestamptz,
    events                      text[] NOT NULL DEFAULT '{*}',
    headers                     jsonb NOT NULL DEFAULT '{}',
    signature_header            text NOT NULL DEFAULT 'X-Webhook-Signature',
    retry_schedule              interval[],
    active                      boolean NOT NULL DEFAULT true,
    disabled_reason             text,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE webhook IS 'webhook_ext: one row per subscription (URL, secret, event patterns)';
COMMENT ON COLUMN webhook.secret IS 'HMAC-SHA256 signing secret; not readable by PUBLIC';
COMMENT ON COLUMN webhook.retry_schedule IS 'delay before each attempt; NULL = the webhook.retry_schedule setting';

-- One row per (event, subscriber).
CREATE TABLE webhook_delivery (
    id               bigserial PRIMARY KEY,
    webhook_id       bigint NOT NULL REFERENCES webhook (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL,
    event            text NOT NULL,
    body             text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivering', 'succeeded', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    -- webhook_replay() starts the retry schedule over: the schedule position is
    -- attempts - attempts_before_replay.
    attempts_before_replay integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz DEFAULT now(),
    -- While status = 'delivering': when the worker's claim expires and the row is re-queued.
    lease_until      timestamptz,
    response_status  integer,
    response_body    text,
    error            text,
    duration_ms      integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
COMMENT ON TABLE webhook_delivery IS 'webhook_ext: one row per (event, subscriber) with its latest delivery state';

-- The worker claims due rows per webhook, oldest first: this keeps a claim cheap however
-- large the backlog is, and lets it be fair across webhooks.
CREATE INDEX webhook_delivery_due_idx ON webhook_delivery (webhook_id, next_attempt_at)
    WHERE status = 'pending';
-- Claims by lease end, for re-queueing expired leases. `lease_until IS NOT NULL` keeps the
-- planner from taking it for a bare `status = 'delivering'` (the worker's record statement):
-- until a vacuum it also holds an entry for every row ever claimed, and reading all of them
-- on every round cost 3 ms where the probes by id cost 0.1.
CREATE INDEX webhook_delivery_leased_idx ON webhook_delivery (lease_until)
    WHERE status = 'delivering' AND lease_until IS NOT NULL;
CREATE INDEX webhook_delivery_finished_idx ON webhook_delivery (updated_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
-- Covers webhook_stats' counts with an index-only scan.
CREATE INDEX webhook_delivery_webhook_created_idx ON webhook_delivery (webhook_id, created_at)
    INCLUDE (status, attempts);
-- No index on event_id: every write of a delivery would pay for it (a random UUID lands on a
-- random page). docs/OPERATIONS.md shows how to add one for lookups by event.

-- One row per HTTP attempt.
CREATE TABLE webhook_attempt (
    id               bigserial PRIMARY KEY,
    delivery_id      bigint NOT NULL REFERENCES webhook_delivery (id) ON DELETE CASCADE,
    -- Denormalised from the delivery so that webhook_stats reads recent attempts cheaply.
    webhook_id       bigint,
    attempt          integer NOT NULL,
    manual           boolean NOT NULL DEFAULT false,
    started_at       timestamptz NOT NULL,
    duration_ms      integer,
    response_status  integer,
    response_body    text,
    error            text
);
COMMENT ON TABLE webhook_attempt IS 'webhook_ext: one row per HTTP attempt';
CREATE INDEX webhook_attempt_delivery_idx ON webhook_attempt (delivery_id);
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

-- Subscriptions are configuration: pg_dump keeps them (and their ids) even though the
-- tables belong to the extension. Deliveries are operational data and are dumped too, so
-- that a restore loses no queued event.
SELECT pg_catalog.pg_extension_config_dump('webhook', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_delivery', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_delivery_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_attempt', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_attempt_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_health', '');

-- Nothing is readable or writable by PUBLIC; docs/SECURITY.md shows the GRANTs for an app role.
REVOKE ALL ON webhook, webhook_delivery, webhook_attempt, webhook_health FROM PUBLIC;
REVOKE ALL ON SEQUENCE webhook_id_seq, webhook_delivery_id_seq, webhook_attempt_id_seq FROM PUBLIC;

-- Per-webhook health. Counts come from an index-only scan of the webhook's deliveries (those
-- not yet purged by webhook.retention); durations from its last 1000 attempts; last success,
-- last failure and the failure streak from webhook_health.
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
