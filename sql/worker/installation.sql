-- The installed extension: two index probes, no join (it runs every round).
SELECT e.oid::bigint,
       (SELECT n.nspname::text FROM pg_catalog.pg_namespace AS n WHERE n.oid = e.extnamespace),
       e.extversion::text
  FROM pg_catalog.pg_extension AS e
 WHERE e.extname = 'webhook_ext'
