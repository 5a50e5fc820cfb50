//! `webhook_trigger()`, the row-level AFTER trigger of application tables (declared in
//! sql/api.sql). It runs once per written row inside the application's transaction, so it is
//! native: Postgres' own `row_to_json` renders the row, the body is built in Rust, and one
//! `INSERT … SELECT`, planned once per backend, queues a delivery per matching webhook.
//!
//! It is SECURITY DEFINER (application roles need not see the webhook tables) without a
//! pinned search_path, which would cost a GUC save and restore per row: its only statement
//! names every table, function, type and operator with its schema, so nothing in it resolves
//! through the caller's search_path.
//!
//! Per-partner control (docs/REFERENCE.md): the delivery's event_key is the row's primary key,
//! looked up once per relation and backend (the relcache invalidates it); a last argument
//! `columns=a,b` or `exclude=x,y` chooses what of the row is sent, checked once against the
//! table in the same way; a webhook's filter is matched by the queueing statement, which
//! parses the data as jsonb only when a matching webhook has one. Each webhook gets its own
//! body when its wire format renames keys or rewrites numbers (docs/MIGRATING.md).

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::CStr;
use std::rc::Rc;
use std::time::SystemTime;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::pg_sys::BuiltinOid::{
    BPCHAROID, INT2OID, INT4OID, INT8OID, JSONBOID, JSONOID, TEXTOID, UUIDOID, VARCHAROID,
};
use pgrx::prelude::*;
use serde_json::{Map, Value};
use webhook_delivery::clock;
use webhook_delivery::columns::{self, Selection};
use webhook_delivery::{envelope, validate, InvalidField};

use super::{refuse, subscribers};
use crate::shared;
use crate::store::{self, Prepared};

thread_local! {
    /// The queueing statement, keyed by the oid of the trigger function that prepared it:
    /// DROP and CREATE EXTENSION make a new function, maybe in another schema. With it, whether
    /// it is the current release's (false until ALTER EXTENSION ... UPDATE adds the columns
    /// for event keys, filters and formats).
    static QUEUE: RefCell<Option<(pg_sys::Oid, bool, Prepared)>> = const { RefCell::new(None) };
    /// What each (relation, trigger) sends: worked out when it first fires, forgotten when
    /// the relation's cache entry is invalidated (ALTER TABLE, CREATE/DROP TRIGGER, ...).
    static SHAPES: RefCell<HashMap<(pg_sys::Oid, pg_sys::Oid), Rc<Shape>>> =
        RefCell::new(HashMap::new());
    static INVALIDATION_REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A table's rows as one trigger sends them.
struct Shape {
    /// The primary key's columns (none: no primary key, no event_key).
    key_columns: Vec<String>,
    /// The trigger's `columns=`/`exclude=` argument, if any.
    selection: Option<Selection>,
    /// Set where an inserted or deleted row is sent as `row_to_json` writes it, unparsed:
    /// the trigger sends every column, the parse would print each column's JSON back the
    /// same, and the key's columns print as their JSON does. Their positions, in key order.
    compact_key: Option<Vec<KeyColumn>>,
}

/// A primary-key column whose output text is its value in the row's JSON.
struct KeyColumn {
    attnum: i32,
    output_function: pg_sys::Oid,
    /// Its JSON is a number (else a string).
    number: bool,
}

/// The row's data, as the body carries it.
enum Data {
    /// Parsed (and, for an UPDATE, with its changes).
    Parsed(Value, Option<Value>),
    /// `row_to_json`'s text (Shape::compact_key).
    Compact(String),
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
    let mut args = trigger.extra_args().unwrap_or_else(|e| {
        refuse(InvalidField::new(
            "event",
            format!("trigger arguments are not UTF-8 ({e})"),
        ))
    });
    let chooses_columns = args
        .last()
        .is_some_and(|last| last.starts_with("columns=") || last.starts_with("exclude="));
    let selection_argument = if chooses_columns { args.pop() } else { None };
    let event = event_name(trigger, &args, &op);
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
    let shape = shape(fired, selection_argument.as_deref(), &table);
    // With the backend's copy of the active webhooks, a row no webhook wants costs nothing
    // more (src/api/subscribers.rs).
    let copy = subscribers::current(trigger.trigger().tgfoid);
    let matching = copy.as_ref().map(|copy| copy.matching(&event));
    if matching.as_ref().is_some_and(Vec::is_empty) {
        return Ok(None);
    }
    let (data, key) = match op {
        PgTriggerOperation::Update => {
            let mut old = row_fields(fired.tg_trigtuple, tupdesc, &table);
            let mut new = row_fields(fired.tg_newtuple, tupdesc, &table);
            let key = columns::event_key(&new, &shape.key_columns);
            if let Some(selection) = &shape.selection {
                selection.apply(&mut old);
                selection.apply(&mut new);
            }
            // An UPDATE that changes nothing (nothing sent) emits nothing.
            let Some(changes) = envelope::changed_columns(&old, &new) else {
                return Ok(None);
            };
            (Data::Parsed(Value::Object(new), Some(changes)), key)
        }
        _ => match &shape.compact_key {
            Some(key_columns) => (
                Data::Compact(row_json(fired.tg_trigtuple, tupdesc)),
                compact_key(fired.tg_trigtuple, tupdesc, key_columns),
            ),
            None => {
                let mut row = row_fields(fired.tg_trigtuple, tupdesc, &table);
                let key = columns::event_key(&row, &shape.key_columns);
                if let Some(selection) = &shape.selection {
                    selection.apply(&mut row);
                }
                (Data::Parsed(Value::Object(row), None), key)
            }
        },
    };

    // SAFETY: gen_random_uuid takes no argument and always returns a uuid.
    let event_id =
        unsafe { pgrx::direct_function_call::<pgrx::Uuid>(pg_sys::gen_random_uuid, &[]) }
            .expect("gen_random_uuid() returns a uuid");
    // Truncated as webhook_enqueue's `floor(extract(epoch FROM clock_timestamp()))`: never
    // later than the commit.
    let emitted_at = clock::unix_seconds(SystemTime::now());
    let body = match data {
        Data::Parsed(data, changes) => {
            envelope::assemble(&event_id.to_string(), &event, emitted_at, data, changes)
        }
        Data::Compact(data) => {
            envelope::assemble_compact(&event_id.to_string(), &event, emitted_at, &data)
        }
    }
    .unwrap_or_else(|e| refuse(e));

    let queued = match (&copy, &matching) {
        (Some(copy), Some(matching)) => {
            subscribers::queue(copy, matching, event_id, &event, &body, key.as_deref())
        }
        _ => queue(trigger.trigger().tgfoid, event_id, &event, body, key),
    }
    .unwrap_or_else(|error| {
        raise(TriggerError::Queueing {
            table: table(),
            error,
        })
    });
    if queued > 0 {
        shared::wake::wake_worker_on_commit();
    }
    Ok(None)
}

/// `cliente` + INSERT → `cliente.created`; three names → the one for this operation.
fn event_name(trigger: &PgTrigger<'_>, args: &[String], op: &PgTriggerOperation) -> String {
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
                    "invalid event: webhook_trigger() takes one prefix or three event names (INSERT, UPDATE, DELETE), then optionally 'columns=...' or 'exclude=...'; trigger {} has {n} names",
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
    match serde_json::from_str(&row_json(tuple, tupdesc)) {
        Ok(Value::Object(fields)) => fields,
        _ => raise(TriggerError::NotAnObject { table: table() }),
    }
}

/// The row as `row_to_json()` writes it. `tuple` and `tupdesc` must be the trigger's.
fn row_json(tuple: *mut pg_sys::HeapTupleData, tupdesc: pg_sys::TupleDesc) -> String {
    // SAFETY: the tuple and its descriptor come from the trigger data Postgres passed in.
    unsafe {
        let row = pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc);
        pgrx::direct_function_call::<String>(pg_sys::row_to_json, &[Some(row)])
    }
    .expect("row_to_json() returns JSON for a row")
}

/// The event key [`columns::event_key`] gives, from the key columns' output text.
fn compact_key(
    tuple: *mut pg_sys::HeapTupleData,
    tupdesc: pg_sys::TupleDesc,
    key_columns: &[KeyColumn],
) -> Option<String> {
    let text = |column: &KeyColumn| {
        let mut is_null = false;
        // SAFETY: the trigger's tuple and descriptor, an attribute number of the relation's
        // primary key, and that column type's output function, which returns a palloc'd C
        // string.
        unsafe {
            let datum = pg_sys::heap_getattr(tuple, column.attnum, tupdesc, &mut is_null);
            (!is_null).then(|| {
                CStr::from_ptr(pg_sys::OidOutputFunctionCall(column.output_function, datum))
                    .to_string_lossy()
                    .into_owned()
            })
        }
    };
    match key_columns {
        [] => None,
        [column] => text(column),
        columns => {
            let values: Vec<Value> = columns
                .iter()
                .map(|column| match text(column) {
                    None => Value::Null,
                    Some(text) if column.number => Value::Number(
                        serde_json::from_str(&text).expect("an integer's text is a JSON number"),
                    ),
                    Some(text) => Value::String(text),
                })
                .collect();
            Some(Value::Array(values).to_string())
        }
    }
}

/// What this trigger sends of its relation's rows, worked out on its first row.
fn shape(
    fired: &pg_sys::TriggerData,
    selection_argument: Option<&str>,
    table: &dyn Fn() -> String,
) -> Rc<Shape> {
    // SAFETY: the trigger data Postgres passed in: its relation and trigger are valid for
    // the call.
    let (relid, trigger_oid) = unsafe { ((*fired.tg_relation).rd_id, (*fired.tg_trigger).tgoid) };
    if let Some(shape) = SHAPES.with(|shapes| shapes.borrow().get(&(relid, trigger_oid)).cloned()) {
        return shape;
    }
    register_invalidation();
    let selection = selection_argument
        .and_then(columns::parse_selection)
        .map(|parsed| {
            let selection = parsed.unwrap_or_else(|e| refuse(e));
            // SAFETY: the relation is open for the call.
            let names = column_names(unsafe { (*fired.tg_relation).rd_att });
            selection
                .check(&table(), &names)
                .unwrap_or_else(|e| refuse(e));
            selection
        });
    let key_columns = primary_key_columns(fired.tg_relation);
    let compact_key = if selection.is_none() {
        compact_key_columns(fired.tg_relation)
    } else {
        None
    };
    let shape = Rc::new(Shape {
        key_columns,
        selection,
        compact_key,
    });
    SHAPES.with(|shapes| {
        shapes
            .borrow_mut()
            .insert((relid, trigger_oid), Rc::clone(&shape))
    });
    shape
}

/// The names of a relation's live columns, in order. `tupdesc` must be a valid descriptor.
fn column_names(tupdesc: pg_sys::TupleDesc) -> Vec<String> {
    // SAFETY: the caller's descriptor, borrowed (not freed) for this call.
    let tupdesc = unsafe { pgrx::PgTupleDesc::from_pg_unchecked(tupdesc) };
    tupdesc
        .iter()
        .filter(|attribute| !attribute.is_dropped())
        .map(|attribute| attribute.name().to_string())
        .collect()
}

/// The key columns for [`Shape::compact_key`], or None where the row must be parsed: a
/// column whose JSON the parse would print differently (json and jsonb keep their own text
/// and spacing; a type from outside the core may have a cast to json that does too, and so
/// may a composite's fields), or a key column whose output text is not its JSON value (a
/// timestamp's JSON is ISO 8601, a boolean's is true/false).
fn compact_key_columns(relation: pg_sys::Relation) -> Option<Vec<KeyColumn>> {
    // SAFETY: the relation is open for the call; the attributes are read from its descriptor
    // and the types looked up in the catalog.
    unsafe {
        let tupdesc = pgrx::PgTupleDesc::from_pg_unchecked((*relation).rd_att);
        if !tupdesc
            .iter()
            .filter(|attribute| !attribute.is_dropped())
            .all(|attribute| prints_back_the_same(attribute.atttypid))
        {
            return None;
        }
        primary_key_attnums(relation)
            .into_iter()
            .map(|attnum| {
                let attribute = tupdesc.get(attnum as usize - 1)?;
                let number = match pg_sys::getBaseType(attribute.atttypid) {
                    base if base == INT2OID.value()
                        || base == INT4OID.value()
                        || base == INT8OID.value() =>
                    {
                        true
                    }
                    base if base == TEXTOID.value()
                        || base == VARCHAROID.value()
                        || base == BPCHAROID.value()
                        || base == UUIDOID.value() =>
                    {
                        false
                    }
                    _ => return None,
                };
                let mut output_function = pg_sys::InvalidOid;
                let mut is_varlena = false;
                pg_sys::getTypeOutputInfo(
                    attribute.atttypid,
                    &mut output_function,
                    &mut is_varlena,
                );
                Some(KeyColumn {
                    attnum: i32::from(attnum),
                    output_function,
                    number,
                })
            })
            .collect()
    }
}

/// Whether `row_to_json`'s JSON for a column of type `typid` is compact and printed back the
/// same by a parse (core scalar types and arrays of them).
fn prints_back_the_same(typid: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups of a type by oid.
    unsafe {
        let base = pg_sys::getBaseType(typid);
        if base == JSONOID.value()
            || base == JSONBOID.value()
            || u32::from(base) >= pg_sys::FirstNormalObjectId
        {
            return false;
        }
        let element = pg_sys::get_element_type(base);
        if element != pg_sys::InvalidOid {
            return prints_back_the_same(element);
        }
        pg_sys::get_typtype(base) != pg_sys::TYPTYPE_COMPOSITE as std::ffi::c_char
    }
}

/// The columns of an open relation's primary key, in key order (empty: none).
fn primary_key_columns(relation: pg_sys::Relation) -> Vec<String> {
    // SAFETY: the relation is open (the caller's trigger relation); get_attname errors on a
    // missing column.
    unsafe {
        let relid = (*relation).rd_id;
        primary_key_attnums(relation)
            .into_iter()
            .map(|attnum| {
                CStr::from_ptr(pg_sys::get_attname(relid, attnum, false))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }
}

/// The attribute numbers of an open relation's primary key, in key order (empty: none).
fn primary_key_attnums(relation: pg_sys::Relation) -> Vec<pg_sys::AttrNumber> {
    // SAFETY: the relation is open (the caller's trigger relation); RelationGetIndexList fills
    // rd_pkindex, which the relcache keeps until the relation changes; the index is opened
    // and closed here with a share lock.
    unsafe {
        pg_sys::list_free(pg_sys::RelationGetIndexList(relation));
        let pk = (*relation).rd_pkindex;
        if pk == pg_sys::InvalidOid {
            return vec![];
        }
        let index = pg_sys::index_open(pk, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let form = (*index).rd_index;
        let key_count = (*form).indnkeyatts as usize;
        let attnums = (*form).indkey.values.as_slice(key_count).to_vec();
        pg_sys::index_close(index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        attnums
    }
}

/// Forget the shapes of a relation whose cache entry Postgres invalidates (all of them for an
/// invalid oid: a cache reset), and the copy of the active webhooks when it is `webhook`.
#[pg_guard]
unsafe extern "C-unwind" fn forget_shapes(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    subscribers::forget(relid);
    SHAPES.with(|shapes| {
        if let Ok(mut shapes) = shapes.try_borrow_mut() {
            if relid == pg_sys::InvalidOid {
                shapes.clear();
            } else {
                shapes.retain(|&(rel, _), _| rel != relid);
            }
        }
    });
}

pub(super) fn register_invalidation() {
    if INVALIDATION_REGISTERED.with(|registered| registered.replace(true)) {
        return;
    }
    // SAFETY: the callback is a #[pg_guard]ed function of this library, which stays loaded
    // for the life of the backend; registered once per backend.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget_shapes), pg_sys::Datum::from(0)) };
}

/// `webhook_trigger_check('cliente', 'exclude=cpf,senha_hash')`: the check the trigger makes
/// when it first fires, callable when the trigger is created (22023 naming the column).
/// Declared in sql/api.sql, where its first argument is a regclass.
#[pg_extern(sql = false)]
fn webhook_trigger_check(relation: pg_sys::Oid, argument: &str) -> bool {
    let Some(parsed) = columns::parse_selection(argument) else {
        refuse(InvalidField::new(
            "columns",
            format!("{argument:?} is neither columns=a,b,... nor exclude=x,y,..."),
        ));
    };
    let selection = parsed.unwrap_or_else(|e| refuse(e));
    // SAFETY: opening a relation by oid with a lock, as any catalog reader; closed below.
    let (table, names) = unsafe {
        let rel = pg_sys::relation_open(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let names = column_names((*rel).rd_att);
        let namespace = pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace);
        let table = format!(
            "{}.{}",
            CStr::from_ptr(namespace).to_string_lossy(),
            CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy()
        );
        pg_sys::relation_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        (table, names)
    };
    selection
        .check(&table, &names)
        .unwrap_or_else(|e| refuse(e));
    true
}

/// Queue one delivery per active matching webhook; returns how many.
fn queue(
    function_oid: pg_sys::Oid,
    event_id: pgrx::Uuid,
    event: &str,
    body: String,
    key: Option<String>,
) -> pgrx::spi::Result<usize> {
    QUEUE.with(|cell| {
        // A statement for an installation not yet updated looks again each time (only until
        // its ALTER EXTENSION ... UPDATE).
        if cell.borrow().as_ref().is_none_or(|(oid, current, _)| {
            *oid != function_oid || (!*current && is_current_release(function_oid))
        }) {
            let current = is_current_release(function_oid);
            let statement = Prepared::new(
                &[UUIDOID, TEXTOID, TEXTOID, TEXTOID],
                queue_sql(function_oid, current),
            );
            *cell.borrow_mut() = Some((function_oid, current, statement));
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
                .run(
                    client,
                    &[event_id.into(), event.into(), body.into(), key.into()],
                )
                .map(|inserted| inserted.len())
        })
    })
}

/// Does the installation of this trigger function have the webhooks' format columns (0.5.0)?
/// Whether the function's installation has this release's schema (0.5.0: event keys, filters
/// and wire formats); an older one has until its ALTER EXTENSION ... UPDATE.
fn is_current_release(function_oid: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups of the function being executed and of tables by name in its
    // schema.
    unsafe {
        let namespace = pg_sys::get_func_namespace(function_oid);
        let has = |table: &CStr, column: &CStr| {
            let relation = pg_sys::get_relname_relid(table.as_ptr(), namespace);
            relation != pg_sys::InvalidOid
                && pg_sys::get_attnum(relation, column.as_ptr()) != pg_sys::InvalidAttrNumber as i16
        };
        has(c"webhook_delivery_store", c"event_key") && has(c"webhook", c"json_numbers")
    }
}

fn queue_sql(function_oid: pg_sys::Oid, current: bool) -> String {
    // SAFETY: catalog lookups of the function being executed (one of the extension's own).
    let (namespace, name) = unsafe {
        let namespace = pg_sys::get_func_namespace(function_oid);
        let name = CStr::from_ptr(pg_sys::get_namespace_name(namespace));
        (namespace, name.to_string_lossy().into_owned())
    };
    let schema = store::quoted_schema(&name);
    // An installation older than this library (0.3.0, until ALTER EXTENSION ... UPDATE) keeps
    // its deliveries in the table webhook_delivery: the application's writes go on, and the
    // update moves what they queued. After the update that name is the view, which inserts
    // into the store (a plan made before the update is made again on it).
    // SAFETY: a catalog lookup by name in the function's own schema.
    let store_exists =
        unsafe { pg_sys::get_relname_relid(c"webhook_delivery_store".as_ptr(), namespace) }
            != pg_sys::InvalidOid;
    // An installation older than 0.5.0 (until its update) has no event_key, filters or
    // formats: its statement leaves them out ($4, the key, is then unused).
    let table = if store_exists {
        "webhook_delivery_store"
    } else {
        "webhook_delivery"
    };
    if !current {
        return format!(
            "INSERT INTO {schema}.{table} (webhook_id, event_id, event, body) \
             SELECT w.id, $1, $2, $3 FROM {schema}.webhook AS w \
              WHERE w.active AND {schema}.webhook_events_match(w.events, $2) \
                AND ($4::pg_catalog.text IS NULL OR $4::pg_catalog.text IS NOT NULL)"
        );
    }
    // Each webhook's body (SPEC §11): the event's own unless the webhook renames keys or
    // rewrites numbers.
    let body = format!(
        "CASE WHEN w.envelope IS NULL AND w.json_numbers OPERATOR(pg_catalog.=) 'exact' THEN $3 \
         ELSE {schema}.webhook_reshape($3, w.envelope::text, w.json_numbers) END"
    );
    // The data is parsed as jsonb by an InitPlan, which runs at most once, and only when an
    // active webhook has a filter: nothing is parsed while no webhook filters. The filter
    // comes before the patterns (quals of equal cost keep their order): with a webhook per
    // tenant, the others are ruled out by a jsonb comparison rather than a pattern match.
    format!(
        "INSERT INTO {schema}.{table} (webhook_id, event_id, event, body, event_key) \
         SELECT w.id, $1, $2, {body}, $4 FROM {schema}.webhook AS w \
          WHERE w.active \
            AND (w.filter IS NULL \
                 OR (SELECT $3::pg_catalog.jsonb OPERATOR(pg_catalog.->) 'data'::pg_catalog.text) \
                    OPERATOR(pg_catalog.@>) w.filter) \
            AND {schema}.webhook_events_match(w.events, $2)"
    )
}
