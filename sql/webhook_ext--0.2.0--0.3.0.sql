-- webhook_ext 0.2.0 → 0.3.0: cheaper writes of deliveries (the trigger path and the worker).
-- The same objects as sql/schema.sql and sql/api.sql create for a fresh 0.3.0 install.

-- Every write of a delivery paid for this index (a random UUID lands on a random page);
-- nothing of the extension reads it. docs/OPERATIONS.md shows how to add one back.
DROP INDEX webhook_delivery_event_id_idx;

-- The trigger queues inline instead of calling webhook_enqueue(): one function call per
-- written row instead of two. Same arguments, same events, same bodies.
-- Row-level AFTER trigger: webhook_trigger('cliente') emits cliente.created/updated/deleted;
-- webhook_trigger('cliente.criado', 'cliente.atualizado', 'cliente.excluido') names them.
-- It queues like webhook_enqueue(), inline: it runs once per written row of the application,
-- and a second function call per row costs more than the queueing itself.
CREATE OR REPLACE FUNCTION webhook_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    event_name text;
    data json;
    changes json;
    new_event_id uuid;
    body text;
BEGIN
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'webhook_trigger() must be used as an AFTER ... FOR EACH ROW trigger (trigger % on %.% is % %)',
            TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_WHEN, TG_LEVEL
            USING ERRCODE = 'feature_not_supported';
    END IF;
    IF TG_NARGS = 1 THEN
        event_name := TG_ARGV[0] || CASE TG_OP WHEN 'INSERT' THEN '.created'
                                               WHEN 'UPDATE' THEN '.updated'
                                               ELSE '.deleted' END;
    ELSIF TG_NARGS = 3 THEN
        event_name := TG_ARGV[CASE TG_OP WHEN 'INSERT' THEN 0 WHEN 'UPDATE' THEN 1 ELSE 2 END];
    ELSE
        RAISE EXCEPTION 'invalid event: webhook_trigger() takes one prefix or three event names (INSERT, UPDATE, DELETE), trigger % has %',
            TG_NAME, TG_NARGS
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF TG_OP = 'DELETE' THEN
        data := row_to_json(OLD);
    ELSE
        data := row_to_json(NEW);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- Changed columns only, in column order; an UPDATE that changes nothing emits nothing.
        SELECT json_object_agg(n.key, json_build_object('anterior', o.value, 'novo', n.value)
                               ORDER BY n.ordinality)
          INTO changes
          FROM json_each(data) WITH ORDINALITY AS n
          JOIN json_each(row_to_json(OLD)) AS o ON o.key = n.key
         WHERE n.value::text IS DISTINCT FROM o.value::text;
        IF changes IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;

    new_event_id := gen_random_uuid();
    body := @extschema@.webhook_envelope(
        new_event_id::text, event_name, extract(epoch FROM clock_timestamp())::bigint,
        data::text, changes::text);
    INSERT INTO @extschema@.webhook_delivery (webhook_id, event_id, event, body)
    SELECT w.id, new_event_id, event_name, body
      FROM @extschema@.webhook AS w
     WHERE w.active AND @extschema@.webhook_events_match(w.events, event_name);
    IF FOUND THEN
        PERFORM @extschema@.webhook_wake_on_commit();
    END IF;
    RETURN NULL;
END
$$;
