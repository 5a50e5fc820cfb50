//! Event building blocks used by webhook_enqueue (sql/api.sql): the body and the matching.

use pgrx::prelude::*;
use webhook_delivery::format::{self, Envelope, JsonNumbers};
use webhook_delivery::{envelope, validate};

use super::{refuse, refuse_null};
use crate::shared;

/// The exact JSON body of an event (docs/REFERENCE.md, "Wire format"); validates the event name.
#[pg_extern(immutable, parallel_safe)]
fn webhook_envelope(
    event_id: &str,
    event: Option<&str>,
    emitted_at_epoch: i64,
    data: Option<&str>,
    changes: Option<&str>,
) -> String {
    let event = event.unwrap_or_else(|| refuse_null("event"));
    validate::event_name(event).unwrap_or_else(|e| refuse(e));
    envelope::build(
        event_id,
        event,
        emitted_at_epoch,
        data.unwrap_or("null"),
        changes,
    )
    .unwrap_or_else(|e| refuse(e))
}

/// A webhook's body from the event's default body, for a webhook whose `envelope` or
/// `json_numbers` is not the default (the queueing statements call it for no other).
#[pg_extern(immutable, parallel_safe)]
fn webhook_reshape(body: &str, envelope: Option<&str>, json_numbers: &str) -> String {
    let envelope = envelope.map(|json| Envelope::parse(json).unwrap_or_else(|e| refuse(e)));
    let numbers = JsonNumbers::parse(json_numbers).unwrap_or_else(|e| refuse(e));
    format::reshape(body, envelope.as_ref(), numbers).unwrap_or_else(|e| refuse(e))
}

/// Does an event name match any of a webhook's patterns (`name`, `prefix.*`, `*`)?
#[pg_extern(immutable, strict, parallel_safe)]
fn webhook_events_match(patterns: Vec<Option<String>>, event: &str) -> bool {
    let patterns: Vec<String> = patterns.into_iter().flatten().collect();
    validate::matches(&patterns, event)
}

/// Wake the worker when this transaction commits (no-op without shared_preload_libraries).
#[pg_extern(volatile, parallel_unsafe)]
fn webhook_wake_on_commit() {
    shared::wake::wake_worker_on_commit();
}

/// Tell the worker when this transaction commits that it made deliveries due
/// (webhook_replay, a reactivated webhook).
#[pg_extern(volatile, parallel_unsafe)]
fn webhook_due_changed_on_commit() {
    shared::wake::due_changed_on_commit();
}

/// Tell the worker when this transaction commits that webhooks' ordering or rate limits
/// changed (webhook_before_write).
#[pg_extern(volatile, parallel_unsafe)]
fn webhook_controls_changed_on_commit() {
    shared::wake::controls_changed_on_commit();
}
