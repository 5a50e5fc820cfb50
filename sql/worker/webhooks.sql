-- $1: webhook ids. What sending to each needs; the previous secret only while it is live.
SELECT w.id, w.url, w.secret,
       CASE WHEN w.previous_secret_expires_at > pg_catalog.now() THEN w.previous_secret END,
       w.signature_header, w.headers::text,
       (SELECT pg_catalog.array_agg((extract(epoch FROM s.delay) * 1000)::bigint ORDER BY s.n)
          FROM pg_catalog.unnest(w.retry_schedule) WITH ORDINALITY AS s(delay, n)),
       w.signature_format, w.signature_input, w.json_numbers,
       w.no_retry_statuses
  FROM @extschema@.webhook AS w
 WHERE w.id = ANY ($1::bigint[])
