-- The oldest transaction still running ($xmin) and the next one to start ($xmax): a missing
-- id seen before this snapshot can only still appear while a transaction older than that
-- snapshot's xmax runs.
SELECT pg_catalog.pg_snapshot_xmin(s)::text::bigint,
       pg_catalog.pg_snapshot_xmax(s)::text::bigint
  FROM pg_catalog.pg_current_snapshot() AS s
