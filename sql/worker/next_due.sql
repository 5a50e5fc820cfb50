-- Seconds until the earliest due row of an active webhook (negative: overdue); NULL if none.
-- One index probe per active webhook.
SELECT extract(epoch FROM pg_catalog.min(next.due_at) - pg_catalog.now())::float8
  FROM @extschema@.webhook AS w
 CROSS JOIN LATERAL (
       SELECT due.due_at FROM @extschema@.webhook_delivery_due AS due
        WHERE due.webhook_id = w.id
        ORDER BY due.due_at LIMIT 1) AS next
 WHERE w.active
