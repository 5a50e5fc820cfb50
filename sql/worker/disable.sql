-- $1: webhooks, $2: why. Switched off (410 Gone); webhook_after_deactivate cancels what
-- they had pending.
UPDATE @extschema@.webhook AS w SET active = false, disabled_reason = r.reason
  FROM unnest($1::bigint[], $2::text[]) AS r(id, reason)
 WHERE w.id = r.id AND w.active
