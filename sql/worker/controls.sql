-- Active webhooks that are ordered or rate-limited, with their limit (requests a second).
-- Loaded when a commit changed them (webhook_before_write) and at maintenance.
SELECT w.id, w.ordered, w.max_per_second::float8
  FROM @extschema@.webhook AS w
 WHERE w.active AND (w.ordered OR w.max_per_second IS NOT NULL)
