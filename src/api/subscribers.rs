//! Each backend's copy of the active webhooks, for `webhook_trigger()`: with it, a row whose
//! event no webhook wants costs no body and no statement, and a row that is wanted is queued
//! with a plain `INSERT ... VALUES` per webhook instead of a scan of `webhook` per row.
//!
//! Kept up to date by invalidation: the statement trigger `webhook_subscribers_changed` on
//! `webhook` (sql/api.sql) invalidates the table's relcache entry, which Postgres delivers to
//! every backend when the change commits (and to this one at once); the relcache callback
//! drops the copy and the next row reads the table again. The copy is used only where that is
//! as good as reading the table per row:
//! - under READ COMMITTED, whose statements see what committed before them (REPEATABLE READ
//!   and SERIALIZABLE keep reading `webhook` with their snapshot, per row, as before);
//! - when the invalidating trigger exists and is enabled (an installation not yet updated to
//!   0.5.1, or one whose trigger a user disabled, reads per row).
//!
//! The copy is read with a fresh snapshot after the locks it needs, so a change whose
//! invalidation came before the read is in it; one whose invalidation came during the read
//! makes the copy serve that row only.

use std::cell::{Cell, RefCell};
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::pg_sys;
use pgrx::pg_sys::BuiltinOid::{INT8ARRAYOID, INT8OID, TEXTARRAYOID, TEXTOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use webhook_delivery::format::{self, Envelope, JsonNumbers};
use webhook_delivery::validate;

use super::{append, refuse};
use crate::store::{self, Prepared};

/// The statement trigger on `webhook` whose firing keeps the copies current.
const INVALIDATING_TRIGGER: &CStr = c"webhook_subscribers_changed";

thread_local! {
    static COPY: RefCell<Option<Rc<Subscribers>>> = const { RefCell::new(None) };
    /// The `webhook` table the copy was read from (the relcache callback compares with it).
    static WEBHOOK_RELATION: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
    /// Invalidations of `webhook` seen so far: a read they overlap is not kept.
    static INVALIDATIONS: Cell<u64> = const { Cell::new(0) };
    static STATEMENTS: RefCell<Option<(pg_sys::Oid, Rc<Statements>)>> = const { RefCell::new(None) };
    /// The `webhook_delivery_store` the statements name by oid (the relcache callback
    /// compares with it).
    static STORE_RELATION: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

/// One active webhook, as the queueing needs it.
pub struct Subscriber {
    id: i64,
    patterns: Vec<String>,
    /// The filter as a jsonb datum in the copy's memory context.
    filter: Option<pg_sys::Datum>,
    /// Its own body shape, when its wire format renames keys or rewrites numbers.
    reshape: Option<(Option<Envelope>, JsonNumbers)>,
}

/// The active webhooks of one installation, in id order.
pub struct Subscribers {
    function_oid: pg_sys::Oid,
    /// The installation's statements, so that queueing a row looks nothing up.
    statements: Rc<Statements>,
    list: Vec<Subscriber>,
    /// Holds the filters' jsonb; deleted with the copy.
    _memory: PgMemoryContexts,
}

impl Subscribers {
    /// The webhooks whose event patterns take `event` (filters come later, with the data).
    pub fn matching<'a>(&'a self, event: &str) -> Vec<&'a Subscriber> {
        self.list
            .iter()
            .filter(|subscriber| validate::matches(&subscriber.patterns, event))
            .collect()
    }
}

/// The statements of one installation (the trigger function's schema).
struct Statements {
    /// webhook_delivery_store and the sequence of its ids, for queueing without a statement
    /// (src/api/append.rs); InvalidOid where they are not found.
    store: pg_sys::Oid,
    sequence: pg_sys::Oid,
    active: Prepared,
    queue_one: Prepared,
    queue_many: Prepared,
}

impl Statements {
    fn new(schema: &str, store: pg_sys::Oid, sequence: pg_sys::Oid) -> Statements {
        Statements {
            store,
            sequence,
            active: Prepared::new(
                &[],
                format!(
                    "SELECT w.id, w.events, w.filter::pg_catalog.text, \
                            w.envelope::pg_catalog.text, w.json_numbers \
                       FROM {schema}.webhook AS w WHERE w.active ORDER BY w.id"
                ),
            ),
            queue_one: Prepared::new(
                &[INT8OID, UUIDOID, TEXTOID, TEXTOID, TEXTOID],
                format!(
                    "INSERT INTO {schema}.webhook_delivery_store \
                            (webhook_id, event_id, event, body, event_key) \
                     VALUES ($1, $2, $3, $4, $5)"
                ),
            ),
            queue_many: Prepared::new(
                &[INT8ARRAYOID, UUIDOID, TEXTOID, TEXTARRAYOID, TEXTOID],
                format!(
                    "INSERT INTO {schema}.webhook_delivery_store \
                            (webhook_id, event_id, event, body, event_key) \
                     SELECT q.webhook_id, $2, $3, q.body, $5 \
                       FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($4)) \
                            AS q(webhook_id, body)"
                ),
            ),
        }
    }
}

/// The copy for the trigger function `function_oid`, read now if there is none; None where
/// the copy may not be used (see the module's notes).
pub fn current(function_oid: pg_sys::Oid) -> Option<Rc<Subscribers>> {
    // SAFETY: reading a backend-global int set by SET TRANSACTION / BEGIN.
    if unsafe { pg_sys::XactIsoLevel } != pg_sys::XACT_READ_COMMITTED as i32 {
        return None;
    }
    if let Some(copy) = COPY.with(|copy| copy.borrow().clone()) {
        if copy.function_oid == function_oid {
            return Some(copy);
        }
    }
    // SAFETY: catalog lookups of the function being executed, and of a table by name in its
    // schema.
    let namespace = unsafe { pg_sys::get_func_namespace(function_oid) };
    // SAFETY: as above.
    let webhook = unsafe { pg_sys::get_relname_relid(c"webhook".as_ptr(), namespace) };
    if webhook == pg_sys::InvalidOid || !invalidated_on_change(webhook) {
        return None;
    }
    super::trigger::register_invalidation();
    WEBHOOK_RELATION.with(|relation| relation.set(webhook));
    let seen = INVALIDATIONS.with(Cell::get);
    let copy = Rc::new(read(function_oid, namespace));
    if INVALIDATIONS.with(Cell::get) == seen {
        COPY.with(|cached| *cached.borrow_mut() = Some(Rc::clone(&copy)));
    }
    Some(copy)
}

/// Does `webhook` have the enabled statement trigger that invalidates the copies?
fn invalidated_on_change(webhook: pg_sys::Oid) -> bool {
    // SAFETY: the relation is opened with a lock and closed below; its trigger descriptor is
    // read while it is open.
    unsafe {
        let relation = pg_sys::relation_open(webhook, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let triggers = (*relation).trigdesc;
        let found = !triggers.is_null()
            && std::slice::from_raw_parts((*triggers).triggers, (*triggers).numtriggers as usize)
                .iter()
                .any(|trigger| {
                    CStr::from_ptr(trigger.tgname) == INVALIDATING_TRIGGER
                        && trigger.tgenabled != pg_sys::TRIGGER_DISABLED as std::ffi::c_char
                });
        pg_sys::relation_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        found
    }
}

fn statements(function_oid: pg_sys::Oid, namespace: pg_sys::Oid) -> Rc<Statements> {
    STATEMENTS.with(|cell| {
        if let Some((oid, statements)) = cell.borrow().as_ref() {
            if *oid == function_oid {
                return Rc::clone(statements);
            }
        }
        // SAFETY: the name of the trigger function's schema, from the catalog.
        let schema = unsafe { CStr::from_ptr(pg_sys::get_namespace_name(namespace)) };
        // SAFETY: catalog lookups of a table by name in the function's schema and of the
        // sequences it owns (a list freed here).
        let (table, sequence) = unsafe {
            let table = pg_sys::get_relname_relid(c"webhook_delivery_store".as_ptr(), namespace);
            let mut sequence = pg_sys::InvalidOid;
            if table != pg_sys::InvalidOid {
                let owned = pg_sys::getOwnedSequences(table);
                if !owned.is_null() && (*owned).length == 1 {
                    sequence = (*(*owned).elements).oid_value;
                }
                pg_sys::list_free(owned);
            }
            (table, sequence)
        };
        STORE_RELATION.with(|relation| relation.set(table));
        let statements = Rc::new(Statements::new(
            &store::quoted_schema(&schema.to_string_lossy()),
            if sequence == pg_sys::InvalidOid {
                pg_sys::InvalidOid
            } else {
                table
            },
            sequence,
        ));
        *cell.borrow_mut() = Some((function_oid, Rc::clone(&statements)));
        statements
    })
}

/// Reads the active webhooks. The statement runs as a writing one, so under READ COMMITTED
/// it takes a new snapshot after its locks (which is when invalidations are taken in).
fn read(function_oid: pg_sys::Oid, namespace: pg_sys::Oid) -> Subscribers {
    let statements = statements(function_oid, namespace);
    // SAFETY: the context is created under TopMemoryContext (it lives with the copy, which
    // deletes it) and the previous context is current again after the closure.
    let mut memory = unsafe {
        PgMemoryContexts::TopMemoryContext
            .switch_to(|_| PgMemoryContexts::new("webhook_ext subscribers"))
    };
    type Row = (i64, Vec<String>, Option<String>, Option<String>, String);
    let read: pgrx::spi::Result<Vec<Row>> = Spi::connect_mut(|client| {
        statements
            .active
            .run(client, &[])?
            .map(|row| {
                Ok((
                    row.get::<i64>(1)?.unwrap_or_default(),
                    row.get::<Vec<Option<String>>>(2)?
                        .unwrap_or_default()
                        .into_iter()
                        .flatten()
                        .collect(),
                    row.get::<String>(3)?,
                    row.get::<String>(4)?,
                    row.get::<String>(5)?.unwrap_or_default(),
                ))
            })
            .collect::<pgrx::spi::Result<Vec<Row>>>()
    });
    let rows = read.unwrap_or_else(|e| {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("webhook_trigger(): reading the active webhooks failed: {e}")
        );
    });
    let list = rows
        .into_iter()
        .map(|(id, patterns, filter, envelope, json_numbers)| {
            // SAFETY: the filter's jsonb is allocated in the copy's own context, which lives as
            // long as the copy.
            let filter = filter.map(|json| unsafe { memory.switch_to(|_| jsonb(&json)) });
            let numbers = JsonNumbers::parse(&json_numbers).unwrap_or_else(|e| refuse(e));
            let envelope =
                envelope.map(|json| Envelope::parse(&json).unwrap_or_else(|e| refuse(e)));
            let reshape = (envelope.is_some() || numbers != JsonNumbers::Exact)
                .then_some((envelope, numbers));
            Subscriber {
                id,
                patterns,
                filter,
                reshape,
            }
        })
        .collect();
    Subscribers {
        function_oid,
        statements,
        list,
        _memory: memory,
    }
}

/// A jsonb datum of `json`, allocated in the current memory context.
fn jsonb(json: &str) -> pg_sys::Datum {
    let text = std::ffi::CString::new(json).expect("JSON text has no NUL byte");
    // SAFETY: jsonb_in takes a C string and errors on invalid JSON; the string outlives the
    // call and the result is a palloc'd jsonb.
    unsafe {
        pgrx::direct_function_call_as_datum(
            pg_sys::jsonb_in,
            &[Some(pg_sys::Datum::from(text.as_ptr()))],
        )
    }
    .expect("jsonb_in returns a value")
}

/// Queues `body` for each of `matching` whose filter its data passes, in id order; returns
/// how many were queued.
pub fn queue(
    copy: &Subscribers,
    matching: &[&Subscriber],
    event_id: pgrx::Uuid,
    event: &str,
    body: &str,
    key: Option<&str>,
) -> pgrx::spi::Result<usize> {
    // The data as jsonb, once, and only if a filter needs it: what `data @> filter` tests.
    let data = matching
        .iter()
        .any(|subscriber| subscriber.filter.is_some())
        .then(|| {
            // SAFETY: jsonb_object_field takes a jsonb and a text and returns the field, or
            // NULL when there is none.
            unsafe {
                pgrx::direct_function_call_as_datum(
                    pg_sys::jsonb_object_field,
                    &[Some(jsonb(body)), "data".into_datum()],
                )
            }
        })
        .flatten();
    let mut webhooks = Vec::with_capacity(matching.len());
    let mut bodies = Vec::with_capacity(matching.len());
    for subscriber in matching {
        if let Some(filter) = subscriber.filter {
            let Some(data) = data else { continue };
            // SAFETY: two jsonb datums: the row's data and a filter of the copy, alive for the
            // call (the caller holds the copy).
            let contained = unsafe {
                pgrx::direct_function_call::<bool>(
                    pg_sys::jsonb_contains,
                    &[Some(data), Some(filter)],
                )
            };
            if contained != Some(true) {
                continue;
            }
        }
        let own_body = match &subscriber.reshape {
            Some((envelope, numbers)) => {
                format::reshape(body, envelope.as_ref(), *numbers).unwrap_or_else(|e| refuse(e))
            }
            None => body.to_owned(),
        };
        webhooks.push(subscriber.id);
        bodies.push(own_body);
    }
    if webhooks.is_empty() {
        return Ok(0);
    }
    // SAFETY: inside the application's transaction, which the INSERT below writes in anyway;
    // it assigns the id if there is none yet. The transaction id comes before the delivery
    // ids: the worker's walk relies on it (webhook_delivery::walk).
    unsafe { pg_sys::GetTopTransactionId() };
    let statements = &copy.statements;
    let queued = webhooks.len();
    if statements.store != pg_sys::InvalidOid {
        let deliveries: Vec<append::Delivery<'_>> = webhooks
            .iter()
            .zip(&bodies)
            .map(|(&webhook_id, body)| append::Delivery {
                webhook_id,
                event_id,
                event,
                body,
                key,
            })
            .collect();
        if append::insert(statements.store, statements.sequence, &deliveries) {
            return Ok(queued);
        }
    }
    Spi::connect_mut(|client| {
        if queued == 1 {
            statements.queue_one.run(
                client,
                &[
                    webhooks[0].into(),
                    event_id.into(),
                    event.into(),
                    bodies.pop().into(),
                    key.into(),
                ],
            )?;
        } else {
            statements.queue_many.run(
                client,
                &[
                    webhooks.into(),
                    event_id.into(),
                    event.into(),
                    bodies.into(),
                    key.into(),
                ],
            )?;
        }
        Ok(queued)
    })
}

/// The relcache callback's part: `relid` (or every relation, for InvalidOid) was invalidated.
pub fn forget(relid: pg_sys::Oid) {
    let every = relid == pg_sys::InvalidOid;
    if every || relid == STORE_RELATION.with(Cell::get) {
        // The deliveries' table changed: its oid and its sequence are looked up again (an
        // upgrade that made the table anew must not leave a session inserting by an old oid).
        STATEMENTS.with(|statements| {
            if let Ok(mut statements) = statements.try_borrow_mut() {
                *statements = None;
            }
        });
    } else if relid != WEBHOOK_RELATION.with(Cell::get) {
        return;
    }
    INVALIDATIONS.with(|count| count.set(count.get() + 1));
    COPY.with(|copy| {
        if let Ok(mut copy) = copy.try_borrow_mut() {
            *copy = None;
        }
    });
}

/// `webhook_subscribers_changed()`: the statement trigger on `webhook` (sql/api.sql).
#[pg_trigger(sql = false)]
fn webhook_subscribers_changed<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, std::convert::Infallible> {
    // SAFETY: Postgres passes a trigger its relation, open for the call; the invalidation is
    // sent to every backend when this transaction commits, and applied here at the next
    // command.
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid((*trigger.trigger_data().tg_relation).rd_id) };
    // Deliveries the worker queued for a deleted webhook must not be sent: it withdraws them
    // from its HTTP queue once this transaction commits.
    if matches!(
        trigger.op(),
        Ok(PgTriggerOperation::Delete | PgTriggerOperation::Truncate)
    ) {
        crate::shared::wake::webhooks_deleted_on_commit();
    }
    Ok(None)
}
