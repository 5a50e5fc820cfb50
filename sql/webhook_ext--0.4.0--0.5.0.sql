-- webhook_ext 0.4.0 → 0.5.0. The same objects as sql/schema.sql and sql/api.sql create for a
-- fresh 0.5.0 install; tests/operations.rs compares the two.

-- Issue 14: per-partner control (SPEC §9).

-- Issue 15: many databases (SPEC §10).

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

-- Functions with new signatures: the old ones are renamed, so that the roles granted them can
-- be granted the new ones below, then dropped.
ALTER FUNCTION webhook_verify_endpoint(text, text, text) RENAME TO webhook_verify_endpoint_0_4_0;
ALTER FUNCTION webhook_create(text, text, text[], text, text, jsonb, boolean) RENAME TO webhook_create_0_4_0;
ALTER FUNCTION webhook_update(bigint, text, text, text[], jsonb, boolean) RENAME TO webhook_update_0_4_0;

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
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
        IF NEW.active AND NOT OLD.active THEN
            NEW.disabled_reason := NULL;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

-- webhook_create and webhook_update take every column as a named argument: new signatures.
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
    json_numbers     text    DEFAULT 'exact'
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
                                     signature_input, json_numbers)
    VALUES (webhook_create.url, effective_secret, webhook_create.events,
            webhook_create.description, webhook_create.name, webhook_create.headers,
            webhook_create.signature_header, webhook_create.envelope,
            webhook_create.signature_format, webhook_create.signature_input,
            webhook_create.json_numbers)
    RETURNING * INTO created;
    RETURN created;
END
$$;
COMMENT ON FUNCTION webhook_create(text, text, text[], text, text, jsonb, boolean, text, jsonb, text, text, text) IS
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
    json_numbers     text    DEFAULT NULL
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
           json_numbers     = coalesce(webhook_update.json_numbers, w.json_numbers)
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
COMMENT ON FUNCTION webhook_update(bigint, text, text, text[], jsonb, boolean, text, jsonb, text, text, text) IS
    'Change a webhook; NULL arguments leave their field unchanged';

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
    -- Each webhook's body: the event's own unless it renames keys or rewrites numbers.
    INSERT INTO @extschema@.webhook_delivery_store (webhook_id, event_id, event, body)
    SELECT w.id, new_event_id, webhook_enqueue.event,
           CASE WHEN w.envelope IS NULL AND w.json_numbers = 'exact' THEN body
                ELSE @extschema@.webhook_reshape(body, w.envelope::text, w.json_numbers) END
      FROM @extschema@.webhook AS w
     WHERE w.active AND @extschema@.webhook_events_match(w.events, webhook_enqueue.event);
    GET DIAGNOSTICS queued = ROW_COUNT;
    IF queued > 0 THEN
        PERFORM @extschema@.webhook_wake_on_commit();
    END IF;
    RETURN queued;
END
$$;

REVOKE ALL ON FUNCTION webhook_create(text, text, text[], text, text, jsonb, boolean, text, jsonb, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_update(bigint, text, text, text[], jsonb, boolean, text, jsonb, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_check_wire_format(text, text, text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_reshape(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webhook_verify_endpoint(text, text, text, text, text, text) FROM PUBLIC;

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
             '@extschema@.webhook_create(text, text, text[], text, text, jsonb, boolean, text, jsonb, text, text, text)'),
            ('@extschema@.webhook_update_0_4_0(bigint, text, text, text[], jsonb, boolean)',
             '@extschema@.webhook_update(bigint, text, text, text[], jsonb, boolean, text, jsonb, text, text, text)')
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
