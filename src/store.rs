//! The SQL that reads and writes deliveries and attempts, shared by the worker and by
//! `webhook_retry`. The statements live in sql/worker/ (one per file, shared with the
//! benchmark); each works on sets (arrays in, rows out) so the worker records a whole batch
//! of outcomes in one round trip.

use std::cell::RefCell;

use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::{
    BOOLARRAYOID, FLOAT8ARRAYOID, FLOAT8OID, INT4ARRAYOID, INT4OID, INT8ARRAYOID, INT8OID,
    TEXTARRAYOID,
};
use pgrx::spi::{self, OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::{PgBuiltInOids, PgOid};
use std::collections::HashMap;
use webhook_delivery::format::{JsonNumbers, SignatureFormat, SignatureInput};
use webhook_delivery::wire::WireFormat;

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

/// The worker's statements, by file name (sql/worker/NAME.sql).
macro_rules! worker_sql {
    ($name:literal) => {
        include_str!(concat!("../sql/worker/", $name, ".sql"))
    };
}

const INSTALLATION_SQL: &str = worker_sql!("installation");

/// How many deliveries are still to send, for the extension in `schema` (already quoted).
pub fn queue_depth_sql(schema: &str) -> String {
    in_schema(worker_sql!("queue_depth"), schema)
}

/// A database's name, "" if it was dropped meanwhile. In a transaction (a catalog lookup).
pub fn database_name(database: pg_sys::Oid) -> String {
    // SAFETY: called in a transaction; get_database_name returns a palloc'd copy of the name,
    // or NULL.
    unsafe {
        let name = pg_sys::get_database_name(database);
        if name.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    }
}

/// The extension's schema as SQL text (quoted where its name needs it): what `@extschema@`
/// becomes in the statements the extension builds. CREATE EXTENSION may have put it anywhere,
/// so it is found in the catalog: by `installation` (sql/worker/installation.sql) for the
/// worker and the SQL functions, from the trigger function's own namespace in the trigger.
pub fn quoted_schema(name: &str) -> String {
    spi::quote_identifier(name)
}

/// A statement of sql/worker/ for the extension's schema (already quoted).
fn in_schema(sql: &str, schema: &str) -> String {
    sql.replace("@extschema@", schema)
}

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

/// A delivery as the walk, a look at the gaps, the due rows or a manual retry found it.
#[derive(Clone)]
pub struct Found {
    pub delivery_id: i64,
    pub webhook_id: i64,
    pub event_id: String,
    pub event: String,
    /// Read only when the delivery is deliverable.
    pub body: String,
    pub attempts: i32,
    /// Position in the retry schedule of the attempt made so far (attempts since creation or
    /// the last replay).
    pub schedule_position: i32,
    /// Pending and this reader's to send (the walk: never attempted; a due row: pending).
    pub deliverable: bool,
    /// The webhook is active (None: it no longer exists).
    pub webhook_active: Option<bool>,
    /// The webhook is ordered, as read with the delivery (in the same snapshot).
    pub webhook_ordered: bool,
    /// The due row it came from (its due time in µs), None if it came from the walk.
    pub due_us: Option<i64>,
    /// The entity it is about (ordered webhooks send one at a time per key).
    pub event_key: Option<String>,
}

/// A delivery taken for one attempt, with everything needed to send it. Its Debug form
/// leaves the secrets out.
#[derive(Clone)]
pub struct Claimed {
    pub delivery_id: i64,
    pub webhook_id: i64,
    pub event_id: String,
    pub event: String,
    pub body: String,
    /// 1-based number of the attempt being made.
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
    /// Its signature format and body promise, or why they do not parse.
    pub wire_format: Result<WireFormat, String>,
    /// The delivery's status before this attempt (used by manual retries).
    pub previous_status: String,
    /// It has a due row (a retry, a replay, a parked delivery), deleted once it is finished.
    pub from_due: bool,
    /// Its key, when its webhook is ordered (set by the worker when it takes it): later
    /// deliveries with that key wait until this one ends.
    pub ordered_key: Option<String>,
    /// Statuses that fail it at once (the webhook's no_retry_statuses).
    pub no_retry_statuses: Vec<i32>,
    /// Its event_key, whatever its webhook (a manual retry releases the next with its key).
    pub event_key: Option<String>,
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
            .field("from_due", &self.from_due)
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
    pub status: &'static str,
    pub retry_delay_ms: Option<i64>,
    pub started_at_epoch: f64,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub from_due: bool,
}

/// A webhook's sending configuration (webhooks.sql).
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub signature_header: String,
    pub headers_json: String,
    pub schedule_ms: Option<Vec<i64>>,
    pub wire_format: Result<WireFormat, String>,
    pub no_retry_statuses: Vec<i32>,
}

impl Found {
    /// The attempt to make now, with its webhook's configuration.
    pub fn claim(self, webhook: &WebhookConfig, previous_status: &str) -> Claimed {
        Claimed {
            delivery_id: self.delivery_id,
            webhook_id: self.webhook_id,
            event_id: self.event_id,
            event: self.event,
            body: self.body,
            attempt: self.attempts + 1,
            schedule_position: self.schedule_position + 1,
            url: webhook.url.clone(),
            secret: webhook.secret.clone(),
            previous_secret: webhook.previous_secret.clone(),
            signature_header: webhook.signature_header.clone(),
            headers_json: webhook.headers_json.clone(),
            schedule_ms: webhook.schedule_ms.clone(),
            wire_format: webhook.wire_format.clone(),
            previous_status: previous_status.to_string(),
            from_due: self.due_us.is_some(),
            ordered_key: None,
            no_retry_statuses: webhook.no_retry_statuses.clone(),
            event_key: self.event_key,
        }
    }
}

/// A webhook's format columns (validated when written; a value that does not parse fails
/// its attempts with the reason rather than sending in another format).
fn wire_format(
    signature_format: Option<&str>,
    signature_input: Option<&str>,
    json_numbers: Option<&str>,
) -> Result<WireFormat, String> {
    let parsed = || -> Result<WireFormat, webhook_delivery::InvalidField> {
        Ok(WireFormat {
            signature_format: SignatureFormat::parse(signature_format.unwrap_or("sha256=hex"))?,
            signature_input: SignatureInput::parse(signature_input.unwrap_or("body"))?,
            json_numbers: JsonNumbers::parse(json_numbers.unwrap_or("exact"))?,
        })
    };
    parsed().map_err(|e| e.to_string())
}

/// One batch of the purge.
pub struct PurgeBatch {
    /// The last id looked at (None: nothing left to look at).
    pub last_id: Option<i64>,
    pub purged: u64,
    /// Every row looked at was older than the retention: the next batch may purge more.
    pub more: bool,
}

/// Schema-qualified statements (sql/worker/), built once per installation.
pub struct Statements {
    pub installation: Installation,
    snapshot: Prepared,
    walk: Prepared,
    recheck: Prepared,
    due: Prepared,
    webhooks: Prepared,
    claim_one: Prepared,
    record: Prepared,
    park: Prepared,
    cancel: Prepared,
    drop_orphans: Prepared,
    drop_stale_due: Prepared,
    disable: Prepared,
    health: Prepared,
    lock_webhooks: Prepared,
    existing_webhooks: Prepared,
    forget_expired_secrets: Prepared,
    purge: Prepared,
    next_due: Prepared,
    queue_depth: Prepared,
    load_frontier: Prepared,
    save_frontier: Prepared,
    controls: Prepared,
    waiting_keys: Prepared,
    park_keyed: Prepared,
    hold_keys: Prepared,
    release_keys: Prepared,
    delivery_failed: Prepared,
}

/// How the worker paces one rate-limited webhook (controls.sql).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Control {
    pub max_per_second: f64,
}

impl Statements {
    pub fn new(installation: Installation) -> Statements {
        let schema = quoted_schema(&installation.schema);
        let statement =
            |types: &[PgBuiltInOids], sql: &str| Prepared::new(types, in_schema(sql, &schema));
        Statements {
            installation,
            snapshot: statement(&[], worker_sql!("snapshot")),
            walk: statement(&[INT8OID, INT8OID], worker_sql!("walk")),
            recheck: statement(&[INT8ARRAYOID, INT8ARRAYOID], worker_sql!("recheck")),
            due: statement(
                &[INT8OID, INT8ARRAYOID, INT4ARRAYOID, INT4OID],
                worker_sql!("due"),
            ),
            webhooks: statement(&[INT8ARRAYOID], worker_sql!("webhooks")),
            claim_one: statement(&[INT8OID], worker_sql!("claim_one")),
            record: statement(
                &[
                    INT8ARRAYOID,
                    INT4ARRAYOID,
                    BOOLARRAYOID,
                    TEXTARRAYOID,
                    INT8ARRAYOID,
                    FLOAT8ARRAYOID,
                    INT4ARRAYOID,
                    INT4ARRAYOID,
                    TEXTARRAYOID,
                    TEXTARRAYOID,
                    BOOLARRAYOID,
                ],
                worker_sql!("record"),
            ),
            park: statement(&[INT8ARRAYOID, INT8ARRAYOID], worker_sql!("park")),
            cancel: statement(&[INT8ARRAYOID], worker_sql!("cancel")),
            drop_orphans: statement(&[INT8ARRAYOID], worker_sql!("drop_orphans")),
            drop_stale_due: statement(&[INT8ARRAYOID, INT8ARRAYOID], worker_sql!("drop_stale_due")),
            disable: statement(&[INT8ARRAYOID, TEXTARRAYOID], worker_sql!("disable")),
            lock_webhooks: statement(&[INT8ARRAYOID], worker_sql!("lock_webhooks")),
            existing_webhooks: statement(&[INT8ARRAYOID], worker_sql!("existing_webhooks")),
            health: statement(
                &[
                    INT8ARRAYOID,
                    BOOLARRAYOID,
                    BOOLARRAYOID,
                    INT4ARRAYOID,
                    INT4OID,
                ],
                worker_sql!("health"),
            ),
            forget_expired_secrets: statement(&[], worker_sql!("forget_expired_secrets")),
            purge: statement(&[INT8OID, INT8OID, FLOAT8OID], worker_sql!("purge")),
            next_due: statement(&[], worker_sql!("next_due")),
            queue_depth: statement(&[], worker_sql!("queue_depth")),
            load_frontier: statement(&[], worker_sql!("load_frontier")),
            save_frontier: statement(&[INT8OID], worker_sql!("save_frontier")),
            controls: statement(&[], worker_sql!("controls")),
            waiting_keys: statement(&[INT8ARRAYOID, TEXTARRAYOID], worker_sql!("waiting_keys")),
            park_keyed: statement(
                &[INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID],
                worker_sql!("park_keyed"),
            ),
            hold_keys: statement(&[INT8ARRAYOID, TEXTARRAYOID], worker_sql!("hold_keys")),
            release_keys: statement(&[INT8ARRAYOID, TEXTARRAYOID], worker_sql!("release_keys")),
            delivery_failed: statement(
                &[INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID],
                worker_sql!("delivery_failed"),
            ),
        }
    }

    /// The active rate-limited webhooks.
    pub fn controls(&self, client: &SpiClient<'_>) -> spi::Result<HashMap<i64, Control>> {
        let mut controls = HashMap::new();
        for row in self.controls.run_readonly(client, &[])? {
            controls.insert(
                row.get::<i64>(1)?.unwrap_or_default(),
                Control {
                    max_per_second: row.get::<f64>(2)?.unwrap_or_default(),
                },
            );
        }
        Ok(controls)
    }

    /// Of these (webhook, key) pairs, those with a due row, and its lowest delivery id.
    pub fn waiting_keys(
        &self,
        client: &SpiClient<'_>,
        keys: &[(i64, String)],
    ) -> spi::Result<HashMap<(i64, String), i64>> {
        let mut waiting = HashMap::new();
        if keys.is_empty() {
            return Ok(waiting);
        }
        let webhooks: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let texts: Vec<String> = keys.iter().map(|k| k.1.clone()).collect();
        for row in self
            .waiting_keys
            .run_readonly(client, &[webhooks.into(), texts.into()])?
        {
            let webhook = row.get::<i64>(1)?.unwrap_or_default();
            let key = row.get::<String>(2)?.unwrap_or_default();
            let lowest = row.get::<i64>(3)?.unwrap_or_default();
            waiting.insert((webhook, key), lowest);
        }
        Ok(waiting)
    }

    /// Park deliveries of ordered webhooks with their key: (delivery, webhook, key, held back).
    pub fn park_keyed(
        &self,
        client: &mut SpiClient<'_>,
        parked: &[(i64, i64, String, bool)],
    ) -> spi::Result<()> {
        if parked.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = parked.iter().map(|p| p.0).collect();
        let webhooks: Vec<i64> = parked.iter().map(|p| p.1).collect();
        let keys: Vec<String> = parked.iter().map(|p| p.2.clone()).collect();
        let held: Vec<bool> = parked.iter().map(|p| p.3).collect();
        self.park_keyed.run(
            client,
            &[ids.into(), webhooks.into(), keys.into(), held.into()],
        )?;
        Ok(())
    }

    /// Put the key on these deliveries' due rows: (delivery, key).
    pub fn hold_keys(&self, client: &mut SpiClient<'_>, held: &[(i64, String)]) -> spi::Result<()> {
        if held.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = held.iter().map(|h| h.0).collect();
        let keys: Vec<String> = held.iter().map(|h| h.1.clone()).collect();
        self.hold_keys.run(client, &[ids.into(), keys.into()])?;
        Ok(())
    }

    /// The next delivery held back behind each of these (webhook, key) is due now.
    pub fn release_keys(
        &self,
        client: &mut SpiClient<'_>,
        ended: &[(i64, String)],
    ) -> spi::Result<()> {
        if ended.is_empty() {
            return Ok(());
        }
        let webhooks: Vec<i64> = ended.iter().map(|e| e.0).collect();
        let keys: Vec<String> = ended.iter().map(|e| e.1.clone()).collect();
        self.release_keys
            .run(client, &[webhooks.into(), keys.into()])?;
        Ok(())
    }

    /// Announce deliveries failed for good: (webhook, delivery, event).
    pub fn delivery_failed(
        &self,
        client: &mut SpiClient<'_>,
        failed: &[(i64, i64, String)],
    ) -> spi::Result<()> {
        if failed.is_empty() {
            return Ok(());
        }
        let webhooks: Vec<i64> = failed.iter().map(|f| f.0).collect();
        let ids: Vec<i64> = failed.iter().map(|f| f.1).collect();
        let events: Vec<String> = failed.iter().map(|f| f.2.clone()).collect();
        self.delivery_failed
            .run(client, &[webhooks.into(), ids.into(), events.into()])?;
        Ok(())
    }

    /// (xmin, xmax) of a snapshot taken now.
    pub fn snapshot(&self, client: &SpiClient<'_>) -> spi::Result<(u64, u64)> {
        let rows = self.snapshot.run_readonly(client, &[])?;
        let row = rows.first();
        let xmin = row.get::<i64>(1)?.unwrap_or_default();
        let xmax = row.get::<i64>(2)?.unwrap_or_default();
        Ok((xmin as u64, xmax as u64))
    }

    /// Up to `limit` rows after `cursor`, in id order.
    pub fn walk(&self, client: &SpiClient<'_>, cursor: i64, limit: i64) -> spi::Result<Vec<Found>> {
        read_found(
            self.walk
                .run_readonly(client, &[cursor.into(), limit.into()])?,
        )
    }

    /// The rows now in the walk's gaps, (from, to) ranges.
    pub fn recheck(&self, client: &SpiClient<'_>, gaps: &[(i64, i64)]) -> spi::Result<Vec<Found>> {
        if gaps.is_empty() {
            return Ok(vec![]);
        }
        let from: Vec<i64> = gaps.iter().map(|g| g.0).collect();
        let to: Vec<i64> = gaps.iter().map(|g| g.1).collect();
        read_found(
            self.recheck
                .run_readonly(client, &[from.into(), to.into()])?,
        )
    }

    /// Due rows: up to its number in `reads` for each webhook there, `default_read` for the
    /// other active webhooks, `limit` in all.
    pub fn due(
        &self,
        client: &SpiClient<'_>,
        limit: i64,
        reads: &[(i64, i32)],
        default_read: i32,
    ) -> spi::Result<Vec<Found>> {
        let ids: Vec<i64> = reads.iter().map(|r| r.0).collect();
        let counts: Vec<i32> = reads.iter().map(|r| r.1).collect();
        read_found(self.due.run_readonly(
            client,
            &[limit.into(), ids.into(), counts.into(), default_read.into()],
        )?)
    }

    /// The sending configuration of these webhooks (those that exist).
    pub fn webhooks(
        &self,
        client: &SpiClient<'_>,
        ids: &[i64],
    ) -> spi::Result<HashMap<i64, WebhookConfig>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut webhooks = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(webhooks);
        }
        for row in self.webhooks.run_readonly(client, &[ids.into()])? {
            let id = row.get::<i64>(1)?.unwrap_or_default();
            webhooks.insert(
                id,
                WebhookConfig {
                    url: row.get::<String>(2)?.unwrap_or_default(),
                    secret: row.get::<String>(3)?.unwrap_or_default(),
                    previous_secret: row.get::<String>(4)?,
                    signature_header: row.get::<String>(5)?.unwrap_or_default(),
                    headers_json: row.get::<String>(6)?.unwrap_or_else(|| "{}".to_string()),
                    schedule_ms: row.get::<Vec<i64>>(7)?,
                    wire_format: wire_format(
                        row.get::<String>(8)?.as_deref(),
                        row.get::<String>(9)?.as_deref(),
                        row.get::<String>(10)?.as_deref(),
                    ),
                    no_retry_statuses: row
                        .get::<Vec<Option<i32>>>(11)?
                        .unwrap_or_default()
                        .into_iter()
                        .flatten()
                        .collect(),
                },
            );
        }
        Ok(webhooks)
    }

    /// Lock one delivery for a manual attempt (whatever its status, which comes with it);
    /// None if it does not exist.
    pub fn claim_one(
        &self,
        client: &mut SpiClient<'_>,
        delivery_id: i64,
    ) -> spi::Result<Option<(Found, String)>> {
        let rows = self.claim_one.run(client, &[delivery_id.into()])?;
        let mut claimed = None;
        for row in rows {
            claimed = Some((
                read_one_found(&row)?,
                row.get::<String>(12)?.unwrap_or_default(),
            ));
        }
        Ok(claimed)
    }

    pub fn record(&self, client: &mut SpiClient<'_>, outcomes: &[Recorded]) -> spi::Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        // In id order: the deliveries' rows are locked in the order a DELETE of their webhook
        // locks them (its index on (webhook_id, id)), so the two wait for each other at most.
        let mut outcomes: Vec<&Recorded> = outcomes.iter().collect();
        outcomes.sort_by_key(|o| (o.delivery_id, o.attempt));
        let col = |f: &dyn Fn(&Recorded) -> Option<String>| {
            outcomes.iter().map(|o| f(o)).collect::<Vec<_>>()
        };
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
        let from_due: Vec<bool> = outcomes.iter().map(|o| o.from_due).collect();
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
                from_due.into(),
            ],
        )?;
        Ok(())
    }

    /// Make deliveries due now: (delivery id, webhook id).
    pub fn park(&self, client: &mut SpiClient<'_>, deliveries: &[(i64, i64)]) -> spi::Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = deliveries.iter().map(|d| d.0).collect();
        let webhooks: Vec<i64> = deliveries.iter().map(|d| d.1).collect();
        self.park.run(client, &[ids.into(), webhooks.into()])?;
        Ok(())
    }

    /// Cancel pending deliveries of inactive webhooks.
    pub fn cancel(&self, client: &mut SpiClient<'_>, ids: &[i64]) -> spi::Result<()> {
        if !ids.is_empty() {
            self.cancel.run(client, &[ids.to_vec().into()])?;
        }
        Ok(())
    }

    /// Delete deliveries whose webhook is gone.
    pub fn drop_orphans(&self, client: &mut SpiClient<'_>, ids: &[i64]) -> spi::Result<()> {
        if !ids.is_empty() {
            self.drop_orphans.run(client, &[ids.to_vec().into()])?;
        }
        Ok(())
    }

    /// Delete due rows (delivery id, due time in µs) that have nothing left to send.
    pub fn drop_stale_due(
        &self,
        client: &mut SpiClient<'_>,
        rows: &[(i64, i64)],
    ) -> spi::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let due: Vec<i64> = rows.iter().map(|r| r.1).collect();
        self.drop_stale_due.run(client, &[ids.into(), due.into()])?;
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

    /// Locks `webhooks` (KEY SHARE, in id order) unless they are being deleted; returns those
    /// locked (sql/worker/lock_webhooks.sql).
    pub fn lock_webhooks(
        &self,
        client: &mut SpiClient<'_>,
        webhooks: &[i64],
    ) -> spi::Result<std::collections::HashSet<i64>> {
        if webhooks.is_empty() {
            return Ok(Default::default());
        }
        self.lock_webhooks
            .run(client, &[webhooks.to_vec().into()])?
            .map(|row| row.get::<i64>(1).map(Option::unwrap_or_default))
            .collect()
    }

    /// Of these webhooks, those that still exist.
    pub fn existing_webhooks(
        &self,
        client: &SpiClient<'_>,
        webhooks: &[i64],
    ) -> spi::Result<std::collections::HashSet<i64>> {
        if webhooks.is_empty() {
            return Ok(Default::default());
        }
        self.existing_webhooks
            .run_readonly(client, &[webhooks.to_vec().into()])?
            .map(|row| row.get::<i64>(1).map(Option::unwrap_or_default))
            .collect()
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

    /// The statements whose plans a pg_test checks.
    #[cfg(any(test, feature = "pg_test"))]
    pub fn recheck_sql(&self) -> &str {
        &self.recheck.sql
    }

    #[cfg(any(test, feature = "pg_test"))]
    pub fn due_sql(&self) -> &str {
        &self.due.sql
    }

    /// The walk statement's text (a pg_test checks its plan).
    #[cfg(any(test, feature = "pg_test"))]
    pub fn walk_sql(&self) -> &str {
        &self.walk.sql
    }

    /// Delete up to `batch` finished deliveries (and, by trigger, their attempts) older than
    /// `retention`, looking at the `batch` oldest from id `from` on; pending ones are never
    /// touched.
    pub fn purge(
        &self,
        client: &mut SpiClient<'_>,
        from: i64,
        batch: i64,
        retention: std::time::Duration,
    ) -> spi::Result<PurgeBatch> {
        let rows = self.purge.run(
            client,
            &[from.into(), batch.into(), retention.as_secs_f64().into()],
        )?;
        let row = rows.first();
        Ok(PurgeBatch {
            last_id: row.get::<i64>(1)?,
            purged: row.get::<i64>(2)?.unwrap_or_default() as u64,
            more: row.get::<bool>(3)?.unwrap_or_default(),
        })
    }

    /// Seconds until the earliest due row is due (negative: overdue), None if none.
    pub fn next_due_in(&self, client: &SpiClient<'_>) -> spi::Result<Option<f64>> {
        self.next_due
            .run_readonly(client, &[])?
            .first()
            .get_one::<f64>()
    }

    /// Deliveries still to send, for webhook_cluster_status() (counted at maintenance).
    pub fn queue_depth(&self, client: &SpiClient<'_>) -> spi::Result<Option<i64>> {
        self.queue_depth
            .run_readonly(client, &[])?
            .first()
            .get_one::<i64>()
    }

    pub fn load_frontier(&self, client: &SpiClient<'_>) -> spi::Result<i64> {
        Ok(self
            .load_frontier
            .run_readonly(client, &[])?
            .first()
            .get_one::<i64>()?
            .unwrap_or_default())
    }

    pub fn save_frontier(&self, client: &mut SpiClient<'_>, frontier: i64) -> spi::Result<()> {
        self.save_frontier.run(client, &[frontier.into()])?;
        Ok(())
    }
}

fn read_found(rows: SpiTupleTable<'_>) -> spi::Result<Vec<Found>> {
    rows.map(|row| read_one_found(&row)).collect()
}

/// The columns every reader of deliveries returns (walk.sql).
fn read_one_found(row: &spi::SpiHeapTupleData<'_>) -> spi::Result<Found> {
    // The webhook's state: 'active', 'ordered' (active too), 'inactive'; NULL once deleted.
    let webhook_state = row.get::<String>(9)?;
    Ok(Found {
        delivery_id: row.get::<i64>(1)?.unwrap_or_default(),
        webhook_id: row.get::<i64>(2)?.unwrap_or_default(),
        event_id: row.get::<String>(3)?.unwrap_or_default(),
        event: row.get::<String>(4)?.unwrap_or_default(),
        body: row.get::<String>(5)?.unwrap_or_default(),
        attempts: row.get::<i32>(6)?.unwrap_or_default(),
        schedule_position: row.get::<i32>(7)?.unwrap_or_default(),
        deliverable: row.get::<bool>(8)?.unwrap_or_default(),
        webhook_active: webhook_state.as_deref().map(|state| state != "inactive"),
        webhook_ordered: webhook_state.as_deref() == Some("ordered"),
        due_us: row.get::<i64>(10)?,
        event_key: row.get::<String>(11)?,
    })
}
