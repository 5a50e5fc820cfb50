//! Queueing a delivery without an SQL statement: the trigger forms the `webhook_delivery_store`
//! row itself and inserts it with `heap_insert` and `index_insert`, the way Postgres inserts
//! catalog rows (`CatalogTupleInsert`). For a one-row INSERT the executor's start-up and the
//! defaults' expressions cost more than the insert (bench/ANALYSIS.md §13).
//!
//! It is only done where the result is the INSERT's: a plain table without rules, row security,
//! INSERT triggers, CHECK constraints or generated columns; indexes on plain columns without
//! predicates (an index a user adds on `event_id`, as docs/OPERATIONS.md shows, is kept
//! current); only the columns this release knows; and the INSERT privilege. Anywhere else
//! `insert` writes nothing and returns false, and the caller runs its INSERT.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

/// One delivery to queue.
pub struct Delivery<'a> {
    pub webhook_id: i64,
    pub event_id: pgrx::Uuid,
    pub event: &'a str,
    pub body: &'a str,
    pub key: Option<&'a str>,
}

/// Where a column's value comes from.
#[derive(Clone, Copy)]
enum Source {
    /// `nextval` of the table's sequence.
    Id,
    WebhookId,
    EventId,
    Event,
    Body,
    EventKey,
    /// `now()`: the transaction's start.
    Now,
    Pending,
    Zero,
    Null,
}

/// The columns of webhook_delivery_store (sql/schema.sql), their types and values at queueing
/// (the tables' defaults).
fn source(name: &CStr) -> Option<(Source, pg_sys::Oid)> {
    use pg_sys::BuiltinOid::*;
    let found = match name.to_bytes() {
        b"id" => (Source::Id, INT8OID),
        b"webhook_id" => (Source::WebhookId, INT8OID),
        b"event_id" => (Source::EventId, UUIDOID),
        b"event" => (Source::Event, TEXTOID),
        b"body" => (Source::Body, TEXTOID),
        b"created_at" | b"next_attempt_at" | b"updated_at" => (Source::Now, TIMESTAMPTZOID),
        b"status" => (Source::Pending, TEXTOID),
        b"attempts" | b"attempts_before_replay" => (Source::Zero, INT4OID),
        b"response_status" | b"duration_ms" => (Source::Null, INT4OID),
        b"response_body" | b"error" => (Source::Null, TEXTOID),
        b"delivered_at" => (Source::Null, TIMESTAMPTZOID),
        b"event_key" => (Source::EventKey, TEXTOID),
        _ => return None,
    };
    Some((found.0, found.1.into()))
}

/// An index to keep current, with what `index_insert` needs.
struct Index {
    relation: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
    unique: bool,
}

/// Inserts `deliveries` into the table `store` (ids from `sequence`), in order; false, with
/// nothing written, where only an INSERT statement does what is needed (see the module notes).
pub fn insert(store: pg_sys::Oid, sequence: pg_sys::Oid, deliveries: &[Delivery<'_>]) -> bool {
    let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: the table is opened with the lock an INSERT takes and kept locked until the
    // transaction ends (closed with NoLock), as the executor does; everything read from it is
    // read while it is open.
    unsafe {
        // SAFETY: as the INSERT would, with the current user (the trigger function's owner).
        if pg_sys::pg_class_aclcheck(store, pg_sys::GetUserId(), pg_sys::ACL_INSERT as _)
            != pg_sys::AclResult::ACLCHECK_OK
        {
            return false;
        }
        let relation = pg_sys::table_open(store, lock);
        let inserted = match columns(relation, deliveries) {
            Some(columns) => match open_indexes(relation) {
                Some(indexes) => {
                    write(relation, sequence, &columns, &indexes, deliveries);
                    close_indexes(indexes);
                    true
                }
                None => false,
            },
            None => false,
        };
        pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        inserted
    }
}

/// Each attribute's source (None for a dropped one), if the table is one `insert` may write.
///
/// SAFETY: `relation` must be open.
unsafe fn columns(
    relation: pg_sys::Relation,
    deliveries: &[Delivery<'_>],
) -> Option<Vec<Option<Source>>> {
    // SAFETY: the caller keeps the contract above.
    unsafe {
        let form = &*(*relation).rd_rel;
        if form.relkind != pg_sys::RELKIND_RELATION as std::ffi::c_char
            || form.relrowsecurity
            || !(*relation).rd_rules.is_null()
        {
            return None;
        }
        let triggers = (*relation).trigdesc;
        if !triggers.is_null() {
            let t = &*triggers;
            if t.trig_insert_before_row
                || t.trig_insert_after_row
                || t.trig_insert_instead_row
                || t.trig_insert_before_statement
                || t.trig_insert_after_statement
                || t.trig_insert_new_table
            {
                return None;
            }
        }
        let descriptor = (*relation).rd_att;
        let constraints = (*descriptor).constr;
        if !constraints.is_null() && ((*constraints).num_check > 0 || generated(&*constraints)) {
            return None;
        }
        let mut has_key_column = false;
        let sources = pgrx::PgTupleDesc::from_pg_unchecked(descriptor)
            .iter()
            .map(|attribute| {
                if attribute.is_dropped() {
                    return Some(None);
                }
                let (source, type_oid) = source(CStr::from_ptr(attribute.attname.data.as_ptr()))?;
                if attribute.atttypid != type_oid
                    || (matches!(source, Source::Null | Source::EventKey) && attribute.attnotnull)
                {
                    return None;
                }
                has_key_column |= matches!(source, Source::EventKey);
                Some(Some(source))
            })
            .collect::<Option<Vec<_>>>()?;
        let needs_key_column = deliveries.iter().any(|delivery| delivery.key.is_some());
        (has_key_column || !needs_key_column).then_some(sources)
    }
}

#[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17"))]
fn generated(constraints: &pg_sys::TupleConstr) -> bool {
    constraints.has_generated_stored
}

#[cfg(feature = "pg18")]
fn generated(constraints: &pg_sys::TupleConstr) -> bool {
    constraints.has_generated_stored || constraints.has_generated_virtual
}

/// The table's indexes ready for inserts, opened with the INSERT's lock; None (all closed
/// again) if one has expressions, a predicate, an exclusion constraint or a deferred
/// uniqueness check, which only the executor evaluates.
///
/// SAFETY: `relation` must be open.
unsafe fn open_indexes(relation: pg_sys::Relation) -> Option<Vec<Index>> {
    // SAFETY: the caller keeps the contract above.
    unsafe {
        let list = pg_sys::RelationGetIndexList(relation);
        let oids: Vec<pg_sys::Oid> = if list.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts((*list).elements, (*list).length as usize)
                .iter()
                .map(|cell| cell.oid_value)
                .collect()
        };
        pg_sys::list_free(list);
        let mut indexes = Vec::with_capacity(oids.len());
        for oid in oids {
            let index = pg_sys::index_open(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
            let info = pg_sys::BuildIndexInfo(index);
            let form = &*(*index).rd_index;
            let plain = (*info).ii_Expressions.is_null()
                && (*info).ii_Predicate.is_null()
                && (*info).ii_ExclusionOps.is_null()
                && (!form.indisunique || form.indimmediate);
            indexes.push(Index {
                relation: index,
                info,
                unique: form.indisunique,
            });
            if !plain {
                close_indexes(indexes);
                return None;
            }
        }
        // Indexes still being built concurrently take no entries yet (as ExecInsertIndexTuples).
        let (ready, building): (Vec<Index>, Vec<Index>) = indexes
            .into_iter()
            .partition(|index| (*index.info).ii_ReadyForInserts);
        close_indexes(building);
        Some(ready)
    }
}

/// SAFETY: each index must be open.
unsafe fn close_indexes(indexes: Vec<Index>) {
    // SAFETY: the caller keeps the contract above.
    unsafe {
        for index in indexes {
            #[cfg(any(feature = "pg17", feature = "pg18"))]
            pg_sys::index_insert_cleanup(index.relation, index.info);
            // The lock is kept until the transaction ends, as the executor keeps it.
            pg_sys::index_close(index.relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        }
    }
}

/// SAFETY: `relation` and `indexes` must be open with RowExclusiveLock, `columns` read from
/// `relation`'s descriptor.
unsafe fn write(
    relation: pg_sys::Relation,
    sequence: pg_sys::Oid,
    columns: &[Option<Source>],
    indexes: &[Index],
    deliveries: &[Delivery<'_>],
) {
    // SAFETY: the caller keeps the contract above.
    unsafe {
        let now = pg_sys::Datum::from(pg_sys::GetCurrentTransactionStartTimestamp());
        let pending = text("pending");
        for delivery in deliveries {
            let id = pgrx::direct_function_call_as_datum(
                pg_sys::nextval_oid,
                &[Some(pg_sys::Datum::from(sequence))],
            )
            .expect("nextval returns a value");
            let mut values = Vec::with_capacity(columns.len());
            let mut nulls = Vec::with_capacity(columns.len());
            for source in columns {
                let value = match source {
                    Some(Source::Id) => Some(id),
                    Some(Source::WebhookId) => Some(pg_sys::Datum::from(delivery.webhook_id)),
                    Some(Source::EventId) => delivery.event_id.into_datum(),
                    Some(Source::Event) => Some(text(delivery.event)),
                    Some(Source::Body) => Some(text(delivery.body)),
                    Some(Source::EventKey) => delivery.key.map(text),
                    Some(Source::Now) => Some(now),
                    Some(Source::Pending) => Some(pending),
                    Some(Source::Zero) => Some(pg_sys::Datum::from(0i32)),
                    Some(Source::Null) | None => None,
                };
                nulls.push(value.is_none());
                values.push(value.unwrap_or(pg_sys::Datum::from(0)));
            }
            let tuple = pg_sys::heap_form_tuple(
                (*relation).rd_att,
                values.as_mut_ptr(),
                nulls.as_mut_ptr(),
            );
            pg_sys::heap_insert(
                relation,
                tuple,
                pg_sys::GetCurrentCommandId(true),
                0,
                std::ptr::null_mut(),
            );
            for index in indexes {
                let info = &*index.info;
                let width = info.ii_NumIndexAttrs as usize;
                let mut index_values = Vec::with_capacity(width);
                let mut index_nulls = Vec::with_capacity(width);
                for &attnum in &info.ii_IndexAttrNumbers[..width] {
                    // Plain columns only (open_indexes): attnum is the column's 1-based number.
                    let column = attnum as usize - 1;
                    index_values.push(values[column]);
                    index_nulls.push(nulls[column]);
                }
                pg_sys::index_insert(
                    index.relation,
                    index_values.as_mut_ptr(),
                    index_nulls.as_mut_ptr(),
                    &mut (*tuple).t_self,
                    relation,
                    if index.unique {
                        pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
                    } else {
                        pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
                    },
                    false,
                    index.info,
                );
            }
            pg_sys::heap_freetuple(tuple);
        }
    }
}

/// A text datum of `value`, in the current memory context.
fn text(value: &str) -> pg_sys::Datum {
    // SAFETY: copies `value.len()` bytes into a new palloc'd text.
    pg_sys::Datum::from(unsafe {
        pg_sys::cstring_to_text_with_len(value.as_ptr().cast(), value.len() as i32)
    })
}
