-- webhook_ext 0.4.0 → 0.5.0. The same objects as sql/schema.sql and sql/api.sql create for a
-- fresh 0.5.0 install; tests/operations.rs compares the two.

-- Issue 14: per-partner control (SPEC §9).

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
