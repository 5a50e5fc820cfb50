-- After its grace period a rotated-out secret is forgotten.
UPDATE @extschema@.webhook AS w SET previous_secret = NULL, previous_secret_expires_at = NULL
 WHERE w.previous_secret_expires_at <= pg_catalog.now()
