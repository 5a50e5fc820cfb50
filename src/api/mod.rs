//! The SQL surface implemented in Rust. The functions users call directly are in
//! `sql/api.sql`; these are the pieces it calls (validation, envelope, HTTP, status).

mod append;
pub mod deliveries;
pub mod events;
pub mod legacy;
pub mod status;
pub mod subscribers;
pub mod subscriptions;
pub mod trigger;

use pgrx::prelude::*;
use webhook_delivery::InvalidField;

/// Bad input: SQLSTATE 22023 with a message naming the field.
pub fn refuse(invalid: InvalidField) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        invalid.to_string()
    );
}

pub fn refuse_null(field: &'static str) -> ! {
    refuse(InvalidField {
        field,
        message: "must not be NULL".to_string(),
    })
}
