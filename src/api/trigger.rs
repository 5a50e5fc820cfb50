//! `webhook_trigger()`, the row-level AFTER trigger of application tables (declared in
//! sql/api.sql). It runs once per written row inside the application's transaction, so it is
//! native: Postgres' own `row_to_json` renders the row, the body is built in Rust, and one
//! `INSERT … SELECT`, planned once per backend, queues a delivery per matching webhook.
//!
//! It is SECURITY DEFINER (application roles need not see the webhook tables) without a
//! pinned search_path, which would cost a GUC save and restore per row: its only statement
//! names every table and function with the extension's schema and its one operator as
//! `OPERATOR(pg_catalog.=)`, so nothing in it resolves through the caller's search_path.

use std::cell::RefCell;
use std::convert::Infallible;
use std::ffi::CStr;
use std::time::{SystemTime, UNIX_EPOCH};

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{TEXTOID, UUIDOID};
use pgrx::prelude::*;
use serde_json::{Map, Value};
use webhook_delivery::{envelope, validate, InvalidField};

use super::refuse;
use crate::store::Prepared;
use crate::wake;

thread_local! {
    /// The queueing statement, keyed by the oid of the trigger function that prepared it:
    /// DROP and CREATE EXTENSION make a new function, maybe in another schema. With it, whether
    /// it writes each webhook's format (false until ALTER EXTENSION ... UPDATE adds the columns).
    static QUEUE: RefCell<Option<(pg_sys::Oid, bool, Prepared)>> = const { RefCell::new(None) };
}

#[pg_trigger(sql = false)]
fn webhook_trigger<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, Infallible> {
    let fired = trigger.trigger_data();
    let when = trigger.when();
    if !matches!(trigger.level(), PgTriggerLevel::Row) || !matches!(when, Ok(PgTriggerWhen::After))
    {
        misuse(trigger);
    }
    let op = trigger
        .op()
        .unwrap_or_else(|_| raise(TriggerError::UnknownEvent));
    let event = event_name(trigger, &op);
    validate::event_name(&event).unwrap_or_else(|e| refuse(e));

    // SAFETY: Postgres passes a trigger its relation, open for the whole call.
    let tupdesc = unsafe { (*fired.tg_relation).rd_att };
    let table = || {
        format!(
            "{}.{}",
            trigger.table_schema().unwrap_or_default(),
            trigger.table_name().unwrap_or_default()
        )
    };
    let (data, changes) = match op {
        PgTriggerOperation::Update => {
            let old = row_fields(fired.tg_trigtuple, tupdesc, &table);
            let new = row_fields(fired.tg_newtuple, tupdesc, &table);
            // An UPDATE that changes nothing emits nothing.
            let Some(changes) = envelope::changed_columns(&old, &new) else {
                return Ok(None);
            };
            (Value::Object(new), Some(changes))
        }
        _ => (
            Value::Object(row_fields(fired.tg_trigtuple, tupdesc, &table)),
            None,
        ),
    };

    // SAFETY: gen_random_uuid takes no argument and always returns a uuid.
    let event_id =
        unsafe { pgrx::direct_function_call::<pgrx::Uuid>(pg_sys::gen_random_uuid, &[]) }
            .expect("gen_random_uuid() returns a uuid");
    let body = envelope::assemble(
        &event_id.to_string(),
        &event,
        unix_now_truncated(),
        data,
        changes,
    )
    .unwrap_or_else(|e| refuse(e));

    let queued = queue(trigger.trigger().tgfoid, event_id, &event, body).unwrap_or_else(|error| {
        raise(TriggerError::Queueing {
            table: table(),
            error,
        })
    });
    if queued > 0 {
        wake::wake_worker_on_commit();
    }
    Ok(None)
}

/// `cliente` + INSERT → `cliente.created`; three names → the one for this operation.
fn event_name(trigger: &PgTrigger<'_>, op: &PgTriggerOperation) -> String {
    let args = trigger.extra_args().unwrap_or_else(|e| {
        refuse(InvalidField::new(
            "event",
            format!("trigger arguments are not UTF-8 ({e})"),
        ))
    });
    let (suffix, position) = match op {
        PgTriggerOperation::Insert => ("created", 0),
        PgTriggerOperation::Update => ("updated", 1),
        _ => ("deleted", 2),
    };
    match args.len() {
        1 => format!("{}.{suffix}", args[0]),
        3 => args[position].clone(),
        n => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "invalid event: webhook_trigger() takes one prefix or three event names (INSERT, UPDATE, DELETE), trigger {} has {n}",
                    trigger.name().unwrap_or("?")
                )
            );
        }
    }
}

fn misuse(trigger: &PgTrigger<'_>) -> ! {
    let when = match trigger.when() {
        Ok(PgTriggerWhen::Before) => "BEFORE",
        Ok(PgTriggerWhen::After) => "AFTER",
        _ => "INSTEAD OF",
    };
    let level = match trigger.level() {
        PgTriggerLevel::Row => "ROW",
        PgTriggerLevel::Statement => "STATEMENT",
    };
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!(
            "webhook_trigger() must be used as an AFTER ... FOR EACH ROW trigger (trigger {} on {}.{} is {when} {level})",
            trigger.name().unwrap_or("?"),
            trigger.table_schema().unwrap_or_default(),
            trigger.table_name().unwrap_or_default(),
        )
    );
}

/// Why the trigger failed where the application's data was not at fault, each with its
/// SQLSTATE. The row's values are personal data in our users' tables: no message carries them.
enum TriggerError {
    /// Postgres fired it for an event a row trigger cannot have.
    UnknownEvent,
    /// `row_to_json` gave something other than a JSON object for a row of `table`.
    NotAnObject { table: String },
    /// The queueing statement failed.
    Queueing {
        table: String,
        error: pgrx::spi::Error,
    },
}

impl From<TriggerError> for ErrorReport {
    fn from(error: TriggerError) -> ErrorReport {
        use PgSqlErrorCode::*;
        let (code, message) = match error {
            TriggerError::UnknownEvent => (
                ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                "webhook_trigger() was fired for an event that is not INSERT, UPDATE or DELETE"
                    .to_string(),
            ),
            TriggerError::NotAnObject { table } => (
                ERRCODE_INTERNAL_ERROR,
                format!(
                    "webhook_trigger(): row_to_json() gave no JSON object for a row of {table}"
                ),
            ),
            TriggerError::Queueing { table, error } => (
                ERRCODE_INTERNAL_ERROR,
                format!("webhook_trigger(): queueing an event of {table} failed: {error}"),
            ),
        };
        ErrorReport::new(code, message, "webhook_trigger")
    }
}

fn raise(error: TriggerError) -> ! {
    ErrorReport::from(error).report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

/// The row as `row_to_json()` writes it (column order, every type's JSON form), parsed with
/// the numbers' text kept.
fn row_fields(
    tuple: *mut pg_sys::HeapTupleData,
    tupdesc: pg_sys::TupleDesc,
    table: &dyn Fn() -> String,
) -> Map<String, Value> {
    // SAFETY: the tuple and its descriptor come from the trigger data Postgres passed in.
    let json = unsafe {
        let row = pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc);
        pgrx::direct_function_call::<String>(pg_sys::row_to_json, &[Some(row)])
    }
    .expect("row_to_json() returns JSON for a row");
    match serde_json::from_str(&json) {
        Ok(Value::Object(fields)) => fields,
        _ => raise(TriggerError::NotAnObject { table: table() }),
    }
}

/// The emission time in whole seconds, truncated as webhook_enqueue's
/// `floor(extract(epoch FROM clock_timestamp()))`: never later than the commit.
fn unix_now_truncated() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

/// Queue one delivery per active matching webhook; returns how many.
fn queue(
    function_oid: pg_sys::Oid,
    event_id: pgrx::Uuid,
    event: &str,
    body: String,
) -> pgrx::spi::Result<usize> {
    QUEUE.with(|cell| {
        // A statement without formats looks again each time (only before an update).
        if cell.borrow().as_ref().is_none_or(|(oid, formats, _)| {
            *oid != function_oid || (!*formats && has_formats(function_oid))
        }) {
            let formats = has_formats(function_oid);
            let statement = Prepared::new(
                &[UUIDOID, TEXTOID, TEXTOID],
                queue_sql(function_oid, formats),
            );
            *cell.borrow_mut() = Some((function_oid, formats, statement));
        }
        // A shared borrow: a trigger a user put on the deliveries may bring us back here.
        let current = cell.borrow();
        // The transaction id before the delivery ids: the worker's walk relies on it
        // (webhook_delivery::walk).
        // SAFETY: inside the application's transaction, which the INSERT below writes in
        // anyway; it assigns the id if there is none yet.
        unsafe { pg_sys::GetTopTransactionId() };
        let (_, _, statement) = current.as_ref().expect("prepared above");
        Spi::connect_mut(|client| {
            statement
                .run(client, &[event_id.into(), event.into(), body.into()])
                .map(|inserted| inserted.len())
        })
    })
}

/// Does the installation of this trigger function have the webhooks' format columns (0.5.0)?
fn has_formats(function_oid: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups of the function being executed and of a table by name in its
    // schema.
    unsafe {
        let namespace = pg_sys::get_func_namespace(function_oid);
        let webhook = pg_sys::get_relname_relid(c"webhook".as_ptr(), namespace);
        webhook != pg_sys::InvalidOid && pg_sys::get_attnum(webhook, c"json_numbers".as_ptr()) != 0
    }
}

fn queue_sql(function_oid: pg_sys::Oid, has_formats: bool) -> String {
    // SAFETY: catalog lookups of the function being executed.
    let (namespace, schema) = unsafe {
        let namespace = pg_sys::get_func_namespace(function_oid);
        let name = pg_sys::get_namespace_name(namespace);
        let quoted = CStr::from_ptr(pg_sys::quote_identifier(name))
            .to_string_lossy()
            .into_owned();
        (namespace, quoted)
    };
    // An installation older than this library (0.3.0, until ALTER EXTENSION ... UPDATE) keeps
    // its deliveries in the table webhook_delivery: the application's writes go on, and the
    // update moves what they queued. After the update that name is the view, which inserts
    // into the store (a plan made before the update is made again on it).
    // SAFETY: a catalog lookup by name in the function's own schema.
    let store_exists =
        unsafe { pg_sys::get_relname_relid(c"webhook_delivery_store".as_ptr(), namespace) }
            != pg_sys::InvalidOid;
    let table = if store_exists {
        "webhook_delivery_store"
    } else {
        "webhook_delivery"
    };
    // Each webhook's body (SPEC §11): the event's own unless the webhook renames keys or
    // rewrites numbers. An installation older than 0.5.0 has no such columns yet.
    let body = if has_formats {
        format!(
            "CASE WHEN w.envelope IS NULL AND w.json_numbers OPERATOR(pg_catalog.=) 'exact' THEN $3 \
             ELSE {schema}.webhook_reshape($3, w.envelope::text, w.json_numbers) END"
        )
    } else {
        "$3".to_string()
    };
    format!(
        "INSERT INTO {schema}.{table} (webhook_id, event_id, event, body) \
         SELECT w.id, $1, $2, {body} FROM {schema}.webhook AS w \
          WHERE w.active AND {schema}.webhook_events_match(w.events, $2)"
    )
}
