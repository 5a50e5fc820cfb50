//! `#[pg_test]`s: SQL behaviour inside one (rolled-back) transaction. Worker behaviour needs
//! real commits and is tested in `tests/` against a real cluster and receiver.
//!
//! One file per topic, each a `#[pg_schema] mod tests` (pgrx runs every test from the
//! `tests` schema); the SQL helpers they share are below.

mod errors;
mod events;
mod partner_control;
mod schema;
mod subscriptions;
mod trigger;
mod wire_formats;
mod worker_sql;

use pgrx::prelude::*;

pub(crate) fn run(sql: &str) {
    Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub(crate) fn one<T: pgrx::FromDatum + pgrx::IntoDatum>(sql: &str) -> Option<T> {
    Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub(crate) fn text(sql: &str) -> String {
    one::<String>(sql).unwrap_or_else(|| panic!("{sql}: NULL"))
}

pub(crate) fn count(sql: &str) -> i64 {
    one::<i64>(sql).unwrap_or(0)
}

/// Runs `sql` in a subtransaction; returns "SQLSTATE: message" if it failed.
pub(crate) fn failure_of(sql: &str) -> Option<String> {
    setup();
    Spi::get_one_with_args::<String>("SELECT pg_temp.failure_of($1)", &[sql.into()]).unwrap()
}

/// Creates `pg_temp.failure_of` once per session (a role switched to later may call it, but
/// could not replace it).
pub(crate) fn setup() {
    if one::<bool>("SELECT pg_catalog.to_regprocedure('pg_temp.failure_of(text)') IS NOT NULL")
        == Some(true)
    {
        return;
    }
    run(r#"
        CREATE FUNCTION pg_temp.failure_of(stmt text) RETURNS text LANGUAGE plpgsql AS $$
        BEGIN
            EXECUTE stmt;
            RETURN NULL;
        EXCEPTION WHEN OTHERS THEN
            RETURN SQLSTATE || ': ' || SQLERRM;
        END $$;
    "#);
}

pub(crate) fn assert_refused(sql: &str, sqlstate: &str, field: &str) {
    let failure =
        failure_of(sql).unwrap_or_else(|| panic!("expected {sqlstate} from {sql}, it succeeded"));
    assert!(
        failure.starts_with(&format!("{sqlstate}: ")),
        "{sql} → {failure}"
    );
    assert!(
        failure.contains(field),
        "message of {sql} should name {field}: {failure}"
    );
}

pub(crate) fn create_webhook(url: &str, events: &str) -> i64 {
    one::<i64>(&format!(
        "SELECT id FROM webhook_create('{url}', 's3cret', '{events}')"
    ))
    .unwrap()
}

pub(crate) fn cliente_table() {
    run(r#"
        CREATE TABLE cliente (
            id serial PRIMARY KEY,
            nome text NOT NULL,
            email text,
            ativo boolean DEFAULT true,
            saldo numeric(12,2) DEFAULT 0,
            tags text[],
            extra jsonb,
            criado_em timestamptz DEFAULT '2024-01-01 10:00:00+00'
        );
        CREATE TRIGGER cliente_webhook AFTER INSERT OR UPDATE OR DELETE ON cliente
            FOR EACH ROW EXECUTE FUNCTION webhook_trigger('cliente.criado', 'cliente.atualizado', 'cliente.excluido');
    "#);
}

pub(crate) fn last_body() -> serde_json::Value {
    serde_json::from_str(&text(
        "SELECT body FROM webhook_delivery ORDER BY id DESC LIMIT 1",
    ))
    .unwrap()
}
