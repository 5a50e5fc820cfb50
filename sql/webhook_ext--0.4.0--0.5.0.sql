-- webhook_ext 0.4.0 → 0.5.0. The same objects as sql/schema.sql and sql/api.sql create for a
-- fresh 0.5.0 install; tests/operations.rs compares the two.

-- Issue 14: per-partner control (SPEC §9).

-- Issue 15: many databases (SPEC §10).

-- Issue 17: wire formats partners already verify (SPEC §11).
