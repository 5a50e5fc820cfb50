-- Active rate-limited webhooks, with their limit (requests a second). Loaded when a commit
-- changed them (webhook_before_write) and at maintenance. Whether a webhook is ordered is not
-- kept here: the statements that find deliveries read it with them (walk.sql).
SELECT w.id, w.max_per_second::float8
  FROM @extschema@.webhook AS w
 WHERE w.active AND w.max_per_second IS NOT NULL
