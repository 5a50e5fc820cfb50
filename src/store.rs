//! The SQL that reads and writes deliveries and attempts, shared by the worker and by
//! `webhook_retry`. Each statement works on sets (arrays in, rows out) so the worker records
//! a whole batch of outcomes in one round trip.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::{
    BOOLARRAYOID, FLOAT8ARRAYOID, FLOAT8OID, INT4ARRAYOID, INT4OID, INT8ARRAYOID, INT8OID,
    TEXTARRAYOID,
};
use pgrx::spi::{self, OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::{PgBuiltInOids, PgOid};

/// A statement planned once (on first use) and kept across transactions: the worker runs the
/// same few statements thousands of times a second.
pub(crate) struct Prepared {
    sql: String,
    types: Vec<PgOid>,
    plan: RefCell<Option<OwnedPreparedStatement>>,
}

impl Prepared {
    pub(crate) fn new(types: &[PgBuiltInOids], sql: String) -> Prepared {
        Prepared {
            sql,
            types: types.iter().map(|&t| PgOid::BuiltIn(t)).collect(),
            plan: RefCell::new(None),
        }
    }

    fn prepare(&self, client: &SpiClient<'_>, mutating: bool) -> spi::Result<()> {
        if self.plan.borrow().is_none() {
            let plan = if mutating {
                client.prepare_mut(self.sql.as_str(), &self.types)?
            } else {
                client.prepare(self.sql.as_str(), &self.types)?
            };
            *self.plan.borrow_mut() = Some(plan.keep());
        }
        Ok(())
    }

    pub(crate) fn run<'conn>(
        &self,
        client: &mut SpiClient<'conn>,
        args: &[pgrx::datum::DatumWithOid<'_>],
    ) -> spi::Result<SpiTupleTable<'conn>> {
        self.prepare(client, true)?;
        let plan = self.plan.borrow();
        client.update(plan.as_ref().expect("prepared above"), None, args)
    }

    fn run_readonly<'conn>(
        &self,
        client: &SpiClient<'conn>,
        args: &[pgrx::datum::DatumWithOid<'_>],
    ) -> spi::Result<SpiTupleTable<'conn>> {
        self.prepare(client, false)?;
        let plan = self.plan.borrow();
        client.select(plan.as_ref().expect("prepared above"), None, args)
    }
}

/// The installed extension: its catalog oid (new after DROP/CREATE EXTENSION) and schema,
/// found in the catalog because CREATE EXTENSION may have put it anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub oid: i64,
    pub schema: String,
    pub version: String,
}

/// Two index probes, no join: it runs every round, under the worker's planner settings.
const INSTALLATION_SQL: &str = "SELECT e.oid::bigint, \
       (SELECT n.nspname::text FROM pg_catalog.pg_namespace n WHERE n.oid = e.extnamespace), \
       e.extversion::text \
     FROM pg_catalog.pg_extension e WHERE e.extname = 'webhook_ext'";

pub fn installation(client: &SpiClient<'_>) -> spi::Result<Option<Installation>> {
    read_installation(client.select(INSTALLATION_SQL, None, &[])?)
}

fn read_installation(rows: SpiTupleTable<'_>) -> spi::Result<Option<Installation>> {
    let mut found = None;
    for row in rows {
        found = Some(Installation {
            oid: row.get::<i64>(1)?.unwrap_or_default(),
            schema: row.get::<String>(2)?.unwrap_or_default(),
            version: row.get::<String>(3)?.unwrap_or_default(),
        });
    }
    Ok(found)
}

/// The installation lookup the worker makes every round, planned once.
pub struct InstallationLookup(Prepared);

impl Default for InstallationLookup {
    fn default() -> Self {
        InstallationLookup(Prepared::new(&[], INSTALLATION_SQL.to_string()))
    }
}

impl InstallationLookup {
    /// Find the installation and hold it (a share lock on the extension) until the transaction
    /// ends. DROP EXTENSION locks the extension before its tables, so it now waits for the
    /// round to finish instead of deadlocking with the round's statements, which lock the same
    /// tables in another order.
    pub fn find_and_hold(&self, client: &SpiClient<'_>) -> spi::Result<Option<Installation>> {
        let Some(found) = read_installation(self.0.run_readonly(client, &[])?)? else {
            return Ok(None);
        };
        let oid = pg_sys::Oid::from(found.oid as u32);
        // SAFETY: plain lock-manager and catalog calls inside the worker's open transaction.
        let still_installed = unsafe {
            pg_sys::LockDatabaseObject(
                pg_sys::ExtensionRelationId,
                oid,
                0,
                pg_sys::AccessShareLock as pg_sys::LOCKMODE,
            );
            // A DROP we waited for has committed: look again with a fresh catalog snapshot.
            pg_sys::InvalidateCatalogSnapshot();
            !pg_sys::get_extension_name(oid).is_null()
        };
        Ok(still_installed.then_some(found))
    }
}

/// A delivery claimed for one attempt, with everything needed to send it. Its Debug form
/// leaves the secrets out.
#[derive(Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub webhook_id: i64,
    pub event_id: String,
    pub event: String,
    pub body: String,
    /// 1-based number of the attempt being made (also the claim's token).
    pub attempt: i32,
    /// Position in the retry schedule (attempts since creation or the last replay).
    pub schedule_position: i32,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub signature_header: String,
    pub headers_json: String,
    /// The webhook's own schedule in milliseconds, or None for the `webhook.retry_schedule` GUC.
    pub schedule_ms: Option<Vec<i64>>,
    /// The delivery's status before this claim (used by manual retries).
    pub previous_status: String,
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("delivery_id", &self.delivery_id)
            .field("webhook_id", &self.webhook_id)
            .field("event_id", &self.event_id)
            .field("event", &self.event)
            .field("attempt", &self.attempt)
            .field("schedule_position", &self.schedule_position)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("signature_header", &self.signature_header)
            .field("previous_status", &self.previous_status)
            .finish_non_exhaustive()
    }
}

/// What one attempt did and what the delivery becomes next.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub delivery_id: i64,
    pub webhook_id: i64,
    pub attempt: i32,
    pub manual: bool,
    /// pending | succeeded | failed
    pub status: &'static str,
    /// For `pending`: wait this long before the next attempt (None keeps next_attempt_at).
    pub retry_delay_ms: Option<i64>,
    pub started_at_epoch: f64,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// Schema-qualified statements, built once per schema.
pub struct Statements {
    pub installation: Installation,
    claim: Prepared,
    webhooks: Prepared,
    claim_one: Prepared,
    record: Prepared,
    release: Prepared,
    disable: Prepared,
    requeue_expired: Prepared,
    requeue_all: Prepared,
    next_due: Prepared,
    purge: Prepared,
    health: Prepared,
    forget_expired_secrets: Prepared,
}

/// The columns of a claimed delivery (see `read_claimed_delivery`).
const CLAIMED_DELIVERY: &str =
    "d.id, d.webhook_id, d.event_id::text, d.event, d.body, d.attempts, \
     d.attempts - d.attempts_before_replay";

/// The columns of its webhook (see `read_webhook`).
const WEBHOOK_CONFIG: &str = "w.url, w.secret, \
     CASE WHEN w.previous_secret_expires_at > now() THEN w.previous_secret END, \
     w.signature_header, w.headers::text, \
     (SELECT array_agg((extract(epoch FROM s.delay) * 1000)::bigint ORDER BY s.n) \
        FROM unnest(w.retry_schedule) WITH ORDINALITY AS s(delay, n))";

impl Statements {
    pub fn new(installation: Installation) -> Statements {
        let s = spi::quote_identifier(&installation.schema);
        Statements {
            installation,
            // Per active webhook, up to its room of due rows ($3 for the webhooks in $2, $4 for
            // the others), oldest first: one slow
            // endpoint can never take every slot, and the cost does not grow with the backlog.
            // The rows are picked by `id = ANY(ARRAY(...))` and nothing else: one primary-key
            // probe each, a plan that stays right whatever the statistics say (joined to
            // `webhook` here, a plan made on a nearly empty table walked a whole index to merge).
            claim: Prepared::new(&[INT8OID, INT8ARRAYOID, INT4ARRAYOID, INT4OID, INT8OID], format!(
                "WITH known(webhook_id, room) AS (SELECT * FROM unnest($2::bigint[], $3::int[])), \
                 room AS ( \
                   SELECT w.id AS webhook_id, coalesce(k.room, $4::int) AS room \
                     FROM {s}.webhook w LEFT JOIN known k ON k.webhook_id = w.id \
                    WHERE w.active AND coalesce(k.room, $4::int) > 0) \
                 UPDATE {s}.webhook_delivery d \
                    SET status = 'delivering', attempts = d.attempts + 1, \
                        lease_until = now() + $5::bigint * interval '1 millisecond', updated_at = now() \
                  WHERE d.id = ANY (ARRAY( \
                          SELECT due.id FROM room r \
                           CROSS JOIN LATERAL ( \
                             SELECT d.id FROM {s}.webhook_delivery d \
                              WHERE d.webhook_id = r.webhook_id AND d.status = 'pending' \
                                AND d.next_attempt_at <= now() \
                              ORDER BY d.next_attempt_at LIMIT r.room \
                              FOR UPDATE SKIP LOCKED) due \
                           LIMIT $1)) \
                 RETURNING {}",
                CLAIMED_DELIVERY
            )),
            // The claimed deliveries' webhooks, once each.
            webhooks: Prepared::new(&[INT8ARRAYOID], format!(
                "SELECT w.id, {} FROM {s}.webhook w WHERE w.id = ANY ($1::bigint[])",
                WEBHOOK_CONFIG
            )),
            // A row locked by someone else, or already in flight, is not claimed: the caller
            // reports it as in use.
            claim_one: Prepared::new(&[INT8OID, INT8OID], format!(
                "WITH p AS ( \
                   SELECT d.id, d.status AS previous_status FROM {s}.webhook_delivery d \
                    WHERE d.id = $1 AND d.status <> 'delivering' FOR UPDATE SKIP LOCKED) \
                 UPDATE {s}.webhook_delivery d \
                    SET status = 'delivering', attempts = d.attempts + 1, \
                        lease_until = now() + $2::bigint * interval '1 millisecond', updated_at = now() \
                   FROM p, {s}.webhook w \
                  WHERE d.id = p.id AND w.id = d.webhook_id \
                 RETURNING {CLAIMED_DELIVERY}, {WEBHOOK_CONFIG}, p.previous_status"
            )),
            // `d.id = ANY($1)` keeps a primary-key probe per row even when the statistics
            // still say the table is nearly empty (a burst after a quiet period).
            // The attempt is always recorded (if the delivery still exists); the delivery's
            // state only if this claim still holds it (a re-queued lease has moved on).
            record: Prepared::new(&[INT8ARRAYOID, INT4ARRAYOID, BOOLARRAYOID, TEXTARRAYOID, INT8ARRAYOID, FLOAT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID], format!(
                "WITH o AS ( \
                   SELECT * FROM unnest($1::bigint[], $2::int[], $3::bool[], $4::text[], $5::bigint[], \
                                        $6::float8[], $7::int[], $8::int[], $9::text[], $10::text[]) \
                     AS o(delivery_id, attempt, manual, status, retry_delay_ms, started_at_epoch, \
                          duration_ms, response_status, response_body, error)), \
                 updated AS ( \
                   UPDATE {s}.webhook_delivery d \
                      SET status = o.status, \
                          next_attempt_at = CASE WHEN o.status = 'pending' THEN coalesce( \
                              now() + o.retry_delay_ms * interval '1 millisecond', d.next_attempt_at) END, \
                          lease_until = NULL, response_status = o.response_status, \
                          response_body = o.response_body, error = o.error, \
                          duration_ms = o.duration_ms, updated_at = now(), \
                          delivered_at = CASE WHEN o.status = 'succeeded' THEN now() ELSE d.delivered_at END \
                     FROM o \
                    WHERE d.id = ANY ($1::bigint[]) AND d.id = o.delivery_id \
                      AND d.status = 'delivering' AND d.attempts = o.attempt \
                   RETURNING d.id) \
                 INSERT INTO {s}.webhook_attempt \
                        (delivery_id, webhook_id, attempt, manual, started_at, duration_ms, response_status, \
                         response_body, error) \
                 SELECT o.delivery_id, d.webhook_id, o.attempt, o.manual, to_timestamp(o.started_at_epoch), \
                        o.duration_ms, o.response_status, o.response_body, o.error \
                   FROM o JOIN {s}.webhook_delivery d ON d.id = o.delivery_id AND d.id = ANY ($1::bigint[])"
            )),
            // Claims handed back unsent: pending again, due when they were, the claim's
            // attempt not counted.
            release: Prepared::new(&[INT8ARRAYOID, INT4ARRAYOID], format!(
                "UPDATE {s}.webhook_delivery d \
                    SET status = 'pending', attempts = d.attempts - 1, lease_until = NULL, updated_at = now() \
                   FROM unnest($1::bigint[], $2::int[]) AS r(id, attempt) \
                  WHERE d.id = ANY ($1::bigint[]) AND d.id = r.id \
                    AND d.status = 'delivering' AND d.attempts = r.attempt"
            )),
            disable: Prepared::new(&[INT8ARRAYOID, TEXTARRAYOID], format!(
                "UPDATE {s}.webhook w SET active = false, disabled_reason = r.reason \
                   FROM unnest($1::bigint[], $2::text[]) AS r(id, reason) \
                  WHERE w.id = r.id AND w.active"
            )),
            // Every maintenance round: a range of the lease index.
            requeue_expired: Prepared::new(&[], format!(
                "UPDATE {s}.webhook_delivery \
                    SET status = 'pending', next_attempt_at = now(), lease_until = NULL, updated_at = now(), \
                        error = 'lease expired: the attempt did not report back (worker restarted?)' \
                  WHERE status = 'delivering' AND lease_until < now()"
            )),
            // Once per worker start: every claim, whatever its lease (a scan of the table).
            requeue_all: Prepared::new(&[], format!(
                "UPDATE {s}.webhook_delivery \
                    SET status = 'pending', next_attempt_at = now(), lease_until = NULL, updated_at = now(), \
                        error = 'lease expired: the attempt did not report back (worker restarted?)' \
                  WHERE status = 'delivering'"
            )),
            // One probe of the due index per active webhook: the backlog's size does not matter.
            next_due: Prepared::new(&[], format!(
                "SELECT extract(epoch FROM min(due.at) - now())::float8 \
                   FROM {s}.webhook w CROSS JOIN LATERAL ( \
                     SELECT d.next_attempt_at AS at FROM {s}.webhook_delivery d \
                      WHERE d.webhook_id = w.id AND d.status = 'pending' \
                      ORDER BY d.next_attempt_at LIMIT 1) due \
                  WHERE w.active"
            )),
            // The streak of failed deliveries: a success in the batch restarts it. Crossing
            // the threshold ($5 > 0) disables the webhook, which cancels its pending rows.
            health: Prepared::new(&[INT8ARRAYOID, BOOLARRAYOID, BOOLARRAYOID, INT4ARRAYOID, INT4OID], format!(
                "WITH delta AS ( \
                   SELECT * FROM unnest($1::bigint[], $2::bool[], $3::bool[], $4::int[]) \
                     AS d(webhook_id, succeeded, failed, failures)), \
                 health AS ( \
                   INSERT INTO {s}.webhook_health AS h \
                          (webhook_id, consecutive_failures, last_success_at, last_failure_at) \
                   SELECT d.webhook_id, d.failures, CASE WHEN d.succeeded THEN now() END, \
                          CASE WHEN d.failed THEN now() END \
                     FROM delta d JOIN {s}.webhook w ON w.id = d.webhook_id \
                   ON CONFLICT (webhook_id) DO UPDATE SET \
                      consecutive_failures = CASE WHEN excluded.last_success_at IS NOT NULL \
                          THEN excluded.consecutive_failures \
                          ELSE h.consecutive_failures + excluded.consecutive_failures END, \
                      last_success_at = coalesce(excluded.last_success_at, h.last_success_at), \
                      last_failure_at = coalesce(excluded.last_failure_at, h.last_failure_at) \
                   RETURNING h.webhook_id, h.consecutive_failures) \
                 UPDATE {s}.webhook w SET active = false, \
                        disabled_reason = format('disabled automatically on %s after %s consecutive failed deliveries', \
                            to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), health.consecutive_failures) \
                   FROM health \
                  WHERE w.id = health.webhook_id AND w.active AND $5::int > 0 \
                    AND health.consecutive_failures >= $5::int"
            )),
            // After its grace period a rotated-out secret is forgotten.
            forget_expired_secrets: Prepared::new(&[], format!(
                "UPDATE {s}.webhook SET previous_secret = NULL, previous_secret_expires_at = NULL \
                  WHERE previous_secret_expires_at <= now()"
            )),
            // Small batches by primary key: never a long lock on rows writers touch.
            purge: Prepared::new(&[FLOAT8OID, INT8OID], format!(
                "DELETE FROM {s}.webhook_delivery WHERE id = ANY (ARRAY( \
                   SELECT id FROM {s}.webhook_delivery \
                    WHERE status IN ('succeeded', 'failed', 'cancelled') \
                      AND updated_at < now() - $1::float8 * interval '1 second' \
                    ORDER BY updated_at LIMIT $2))"
            )),
        }
    }

    /// Delete up to `batch` finished deliveries (and, by cascade, their attempts) older than
    /// `retention`; pending ones are never touched.
    pub fn purge(
        &self,
        client: &mut SpiClient<'_>,
        retention: std::time::Duration,
        batch: i64,
    ) -> spi::Result<u64> {
        let rows = self
            .purge
            .run(client, &[retention.as_secs_f64().into(), batch.into()])?;
        Ok(rows.len() as u64)
    }

    /// Claim up to `limit` due deliveries: up to its room for each webhook in `rooms`, up to
    /// `default_room` for the others.
    pub fn claim(
        &self,
        client: &mut SpiClient<'_>,
        limit: i64,
        rooms: &[(i64, i32)],
        default_room: i32,
        lease_ms: i64,
    ) -> spi::Result<Vec<Claimed>> {
        let ids: Vec<i64> = rooms.iter().map(|r| r.0).collect();
        let room: Vec<i32> = rooms.iter().map(|r| r.1).collect();
        let rows = self.claim.run(
            client,
            &[
                limit.into(),
                ids.into(),
                room.into(),
                default_room.into(),
                lease_ms.into(),
            ],
        )?;
        let deliveries = rows
            .map(|row| read_claimed_delivery(&row))
            .collect::<spi::Result<Vec<_>>>()?;
        if deliveries.is_empty() {
            return Ok(vec![]);
        }
        let mut ids: Vec<i64> = deliveries.iter().map(|d| d.webhook_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut webhooks = std::collections::HashMap::with_capacity(ids.len());
        for row in self.webhooks.run_readonly(client, &[ids.into()])? {
            let id = row.get::<i64>(1)?.unwrap_or_default();
            webhooks.insert(id, read_webhook(&row, 2)?);
        }
        Ok(deliveries
            .into_iter()
            .filter_map(|delivery| {
                // A webhook deleted since the claim took its deliveries with it.
                let webhook = webhooks.get(&delivery.webhook_id)?;
                Some(Claimed {
                    previous_status: "pending".to_string(),
                    ..delivery.with(webhook)
                })
            })
            .collect())
    }

    /// Hand back claims that were never attempted: (delivery id, the claim's attempt).
    pub fn release(&self, client: &mut SpiClient<'_>, claims: &[(i64, i32)]) -> spi::Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = claims.iter().map(|c| c.0).collect();
        let attempts: Vec<i32> = claims.iter().map(|c| c.1).collect();
        self.release.run(client, &[ids.into(), attempts.into()])?;
        Ok(())
    }

    /// Claim one delivery for a manual attempt; None if it is in flight or locked.
    pub fn claim_one(
        &self,
        client: &mut SpiClient<'_>,
        delivery_id: i64,
        lease_ms: i64,
    ) -> spi::Result<Option<Claimed>> {
        let rows = self
            .claim_one
            .run(client, &[delivery_id.into(), lease_ms.into()])?;
        let mut claimed = Vec::new();
        for row in rows {
            let webhook = read_webhook(&row, 8)?;
            claimed.push(Claimed {
                previous_status: row.get::<String>(14)?.unwrap_or_default(),
                ..read_claimed_delivery(&row)?.with(&webhook)
            });
        }
        Ok(claimed.pop())
    }

    pub fn record(&self, client: &mut SpiClient<'_>, outcomes: &[Recorded]) -> spi::Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let col =
            |f: &dyn Fn(&Recorded) -> Option<String>| outcomes.iter().map(f).collect::<Vec<_>>();
        let ids: Vec<i64> = outcomes.iter().map(|o| o.delivery_id).collect();
        let attempts: Vec<i32> = outcomes.iter().map(|o| o.attempt).collect();
        let manual: Vec<bool> = outcomes.iter().map(|o| o.manual).collect();
        let statuses: Vec<String> = outcomes.iter().map(|o| o.status.to_string()).collect();
        let delays: Vec<Option<i64>> = outcomes.iter().map(|o| o.retry_delay_ms).collect();
        let started: Vec<f64> = outcomes.iter().map(|o| o.started_at_epoch).collect();
        let durations: Vec<i32> = outcomes.iter().map(|o| o.duration_ms).collect();
        let response_status: Vec<Option<i32>> =
            outcomes.iter().map(|o| o.response_status).collect();
        let response_body = col(&|o| o.response_body.clone());
        let error = col(&|o| o.error.clone());
        self.record.run(
            client,
            &[
                ids.into(),
                attempts.into(),
                manual.into(),
                statuses.into(),
                delays.into(),
                started.into(),
                durations.into(),
                response_status.into(),
                response_body.into(),
                error.into(),
            ],
        )?;
        Ok(())
    }

    /// Move each webhook's failure streak; disable those reaching `disable_after` (0: never).
    /// Returns how many were disabled.
    pub fn update_health(
        &self,
        client: &mut SpiClient<'_>,
        deltas: &[webhook_delivery::health::HealthDelta],
        disable_after: i32,
    ) -> spi::Result<u64> {
        if deltas.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = deltas.iter().map(|d| d.webhook_id).collect();
        let succeeded: Vec<bool> = deltas.iter().map(|d| d.succeeded).collect();
        let failed: Vec<bool> = deltas.iter().map(|d| d.failed).collect();
        let failures: Vec<i32> = deltas.iter().map(|d| d.failures).collect();
        let rows = self.health.run(
            client,
            &[
                ids.into(),
                succeeded.into(),
                failed.into(),
                failures.into(),
                disable_after.into(),
            ],
        )?;
        Ok(rows.len() as u64)
    }

    pub fn forget_expired_secrets(&self, client: &mut SpiClient<'_>) -> spi::Result<()> {
        self.forget_expired_secrets.run(client, &[])?;
        Ok(())
    }

    /// Switch webhooks off (410 Gone); their pending deliveries are cancelled by trigger.
    pub fn disable(
        &self,
        client: &mut SpiClient<'_>,
        webhooks: &[(i64, String)],
    ) -> spi::Result<()> {
        if webhooks.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = webhooks.iter().map(|w| w.0).collect();
        let reasons: Vec<String> = webhooks.iter().map(|w| w.1.clone()).collect();
        self.disable.run(client, &[ids.into(), reasons.into()])?;
        Ok(())
    }

    /// The record statement's text (a pg_test checks its plan).
    #[cfg(any(test, feature = "pg_test"))]
    pub fn record_sql(&self) -> &str {
        &self.record.sql
    }

    /// Put claims whose lease ran out back in the queue (`all`: every claim, at worker start,
    /// when no attempt of a previous worker can still be running).
    pub fn requeue_expired(&self, client: &mut SpiClient<'_>, all: bool) -> spi::Result<u64> {
        let statement = if all {
            &self.requeue_all
        } else {
            &self.requeue_expired
        };
        let rows = statement.run(client, &[])?;
        Ok(rows.len() as u64)
    }

    /// Seconds until the earliest pending delivery is due (negative: overdue), None if none.
    pub fn next_due_in(&self, client: &SpiClient<'_>) -> spi::Result<Option<f64>> {
        self.next_due
            .run_readonly(client, &[])?
            .first()
            .get_one::<f64>()
    }
}

/// A claimed delivery's own columns (CLAIMED_DELIVERY), before its webhook's are added.
struct ClaimedDelivery {
    delivery_id: i64,
    webhook_id: i64,
    event_id: String,
    event: String,
    body: String,
    attempt: i32,
    schedule_position: i32,
}

/// A webhook's columns (WEBHOOK_CONFIG).
struct WebhookConfig {
    url: String,
    secret: String,
    previous_secret: Option<String>,
    signature_header: String,
    headers_json: String,
    schedule_ms: Option<Vec<i64>>,
}

impl ClaimedDelivery {
    fn with(self, webhook: &WebhookConfig) -> Claimed {
        Claimed {
            delivery_id: self.delivery_id,
            webhook_id: self.webhook_id,
            event_id: self.event_id,
            event: self.event,
            body: self.body,
            attempt: self.attempt,
            schedule_position: self.schedule_position,
            url: webhook.url.clone(),
            secret: webhook.secret.clone(),
            previous_secret: webhook.previous_secret.clone(),
            signature_header: webhook.signature_header.clone(),
            headers_json: webhook.headers_json.clone(),
            schedule_ms: webhook.schedule_ms.clone(),
            previous_status: String::new(),
        }
    }
}

fn read_claimed_delivery(row: &spi::SpiHeapTupleData<'_>) -> spi::Result<ClaimedDelivery> {
    Ok(ClaimedDelivery {
        delivery_id: row.get::<i64>(1)?.unwrap_or_default(),
        webhook_id: row.get::<i64>(2)?.unwrap_or_default(),
        event_id: row.get::<String>(3)?.unwrap_or_default(),
        event: row.get::<String>(4)?.unwrap_or_default(),
        body: row.get::<String>(5)?.unwrap_or_default(),
        attempt: row.get::<i32>(6)?.unwrap_or_default(),
        schedule_position: row.get::<i32>(7)?.unwrap_or_default(),
    })
}

/// The WEBHOOK_CONFIG columns, from column `first` on.
fn read_webhook(row: &spi::SpiHeapTupleData<'_>, first: usize) -> spi::Result<WebhookConfig> {
    Ok(WebhookConfig {
        url: row.get::<String>(first)?.unwrap_or_default(),
        secret: row.get::<String>(first + 1)?.unwrap_or_default(),
        previous_secret: row.get::<String>(first + 2)?,
        signature_header: row.get::<String>(first + 3)?.unwrap_or_default(),
        headers_json: row
            .get::<String>(first + 4)?
            .unwrap_or_else(|| "{}".to_string()),
        schedule_ms: row.get::<Vec<i64>>(first + 5)?,
    })
}
