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
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    -- Per-partner control (docs/REFERENCE.md): deliveries with the same event_key one at a
    -- time, in commit order; only events whose data contains the filter; at most this many
    -- requests a second; these statuses fail a delivery at once. Checked by
    -- webhook_before_write (sql/api.sql).
    ordered                     boolean NOT NULL DEFAULT false,
    filter                      jsonb,
    max_per_second              numeric,
    no_retry_statuses           integer[],
    -- The wire format a partner already verifies (SPEC §11); the defaults are the one every
    -- webhook had before, byte for byte. Checked by webhook_check_wire_format().
    envelope                    jsonb,
    signature_format            text NOT NULL DEFAULT 'sha256=hex',
    signature_input             text NOT NULL DEFAULT 'body',
    json_numbers                text NOT NULL DEFAULT 'exact'
);
COMMENT ON TABLE webhook IS 'webhook_ext: one row per subscription (URL, secret, event patterns)';
COMMENT ON COLUMN webhook.secret IS 'HMAC-SHA256 signing secret; not readable by PUBLIC';
COMMENT ON COLUMN webhook.retry_schedule IS 'delay before each attempt; NULL = the webhook.retry_schedule setting';
COMMENT ON COLUMN webhook.envelope IS 'new names of the body''s top-level keys (id, event, timestamp, data), null to leave one out; NULL = none renamed';
COMMENT ON COLUMN webhook.signature_format IS 'sha256=hex | hex | secret | none: what the signature header carries';
COMMENT ON COLUMN webhook.signature_input IS 'body | python_sorted_json: what the signature header''s HMAC covers';
COMMENT ON COLUMN webhook.json_numbers IS 'exact | javascript: numbers as Postgres wrote them, or as JSON.stringify writes them back';

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
    delivered_at     timestamptz,
    -- The entity the event is about (the row's primary key, or webhook_emit's key): ordered
    -- webhooks deliver one at a time per key. Written once, at queueing; last, where an
    -- upgrade adds it, and where the outcome's HOT update leaves it out of the WAL (suffix).
    event_key        text
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
    due_at       timestamptz NOT NULL,
    -- Set only for deliveries of ordered webhooks: their key, so that a later delivery with
    -- the same key waits behind this one (a due_at of 9999-12-31: until an earlier one ends).
    event_key    text
);
COMMENT ON TABLE webhook_delivery_due IS 'webhook_ext: pending deliveries the worker will take by due time (retries, replays, backlogs)';
CREATE INDEX webhook_delivery_due_webhook_idx ON webhook_delivery_due (webhook_id, due_at);
-- Which keys of an ordered webhook have a delivery waiting; empty unless a webhook is ordered.
CREATE INDEX webhook_delivery_due_key_idx ON webhook_delivery_due (webhook_id, event_key, delivery_id)
    WHERE event_key IS NOT NULL;

-- How far the worker's walk of webhook_delivery_store has seen: every delivery with an id up
-- to frontier was sent, recorded or moved to webhook_delivery_due. One row.
CREATE TABLE webhook_delivery_frontier (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    frontier   bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE webhook_delivery_frontier IS 'webhook_ext: how far the worker has seen queued deliveries (one row)';
INSERT INTO webhook_delivery_frontier DEFAULT VALUES;

-- One row per HTTP attempt. Its key is its only index, and it has no foreign key (which
-- would lock the delivery row): deleting deliveries deletes their attempts by trigger.
CREATE TABLE webhook_attempt (
    id               bigserial,
    delivery_id      bigint NOT NULL,
    attempt          integer NOT NULL,
    manual           boolean NOT NULL DEFAULT false,
    started_at       timestamptz NOT NULL,
    duration_ms      integer,
    response_status  integer,
    response_body    text,
    error            text,
    -- Denormalised from the delivery (last: where 0.2.0 added it to installed tables).
    webhook_id       bigint,
    PRIMARY KEY (delivery_id, attempt)
);
COMMENT ON TABLE webhook_attempt IS 'webhook_ext: one row per HTTP attempt';

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
-- that a restore loses no queued event. The walk's frontier is not: a restored database is
-- walked from its first delivery (the pending ones are sent, the others skipped).
SELECT pg_catalog.pg_extension_config_dump('webhook', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_delivery_store', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_delivery_store_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_delivery_due', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_attempt', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_attempt_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webhook_health', '');

-- Nothing is readable or writable by PUBLIC; docs/SECURITY.md shows the GRANTs for an app role.
REVOKE ALL ON webhook, webhook_delivery_store, webhook_delivery_due, webhook_delivery_frontier,
    webhook_attempt, webhook_health FROM PUBLIC;
REVOKE ALL ON SEQUENCE webhook_id_seq, webhook_delivery_store_id_seq, webhook_attempt_id_seq FROM PUBLIC;

