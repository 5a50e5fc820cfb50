//! `#[pg_test]`s: Every refusal a user can meet, with its deliberate SQLSTATE.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

    /// Every refusal a user can meet, with the SQLSTATE it is raised with: none is XX000
    /// (internal error), and the message names what was wrong.
    #[pg_test]
    fn every_refusal_a_user_can_meet_has_a_deliberate_sqlstate() {
        setup();
        let id = create_webhook("https://example.com/inventory", "{inv.*}");
        run("SELECT webhook_emit('inv.x', '{}')");
        run("CREATE TABLE inventario (id int)");
        run("CREATE TRIGGER inventario_stmt AFTER INSERT ON inventario FOR EACH STATEMENT EXECUTE FUNCTION webhook_trigger('inv')");
        let refusals: &[(&str, &str, &str)] = &[
            ("SELECT webhook_retry(-1)", "P0002", "delivery -1"),
            ("SELECT webhook_ping(-1)", "P0002", "webhook -1"),
            ("SELECT webhook_update(-1, description => 'x')", "P0002", "webhook -1"),
            ("SELECT webhook_delete(-1)", "P0002", "webhook -1"),
            ("SELECT webhook_rotate_secret(-1)", "P0002", "webhook -1"),
            ("SELECT webhook_replay(-1, now() - interval '1 day')", "P0002", "webhook -1"),
            (&format!("SELECT webhook_rotate_secret({id}, grace => interval '-1 day')"), "22023", "grace"),
            (&format!("SELECT webhook_replay({id}, now(), now() - interval '1 day')"), "22023", "since"),
            (&format!("SELECT webhook_replay({id}, now() - interval '1 day', status => 'pending')"), "22023", "status"),
            ("SELECT webhook_create('ftp://example.com/x')", "22023", "url"),
            ("SELECT webhook_create('https://example.com/x', secret => '')", "22023", "secret"),
            ("SELECT webhook_create('https://example.com/x', events => '{\"bad pattern\"}')", "22023", "event"),
            ("SELECT webhook_create('https://example.com/x', headers => '{\"X-Webhook-ID\": \"1\"}')", "22023", "header"),
            (&format!("UPDATE webhook SET url = 'https://example.com/other' WHERE id = {id}"), "22023", "url"),
            ("SELECT webhook_emit(NULL, '{}')", "22023", "event"),
            ("SELECT webhook_emit('no dots here!', '{}')", "22023", "event"),
            ("INSERT INTO inventario VALUES (1)", "0A000", "FOR EACH ROW"),
            ("SET webhook.retry_shedule = '1s'", "42602", "webhook.retry_shedule"),
            // Per-partner control (SPEC §9).
            ("SELECT webhook_cancel(-1)", "P0002", "delivery -1"),
            ("SELECT webhook_cancel_pending(-1)", "P0002", "webhook -1"),
            ("SELECT webhook_create('https://example.com/x', filter => '[7]')", "22023", "filter"),
            ("SELECT webhook_create('https://example.com/x', max_per_second => 0)", "22023", "max_per_second"),
            ("SELECT webhook_create('https://example.com/x', no_retry_statuses => '{200}')", "22023", "no_retry_statuses"),
            ("SELECT webhook_trigger_check('inventario', 'exclude=cpf')", "22023", "cpf"),
            // Wire formats (SPEC §11).
            ("SELECT webhook_create('https://example.com/x', envelope => '{\"evento\": 7}')", "22023", "envelope"),
            ("SELECT webhook_create('https://example.com/x', signature_format => 'md5')", "22023", "signature_format"),
            ("SELECT webhook_create('https://example.com/x', signature_input => 'xml')", "22023", "signature_input"),
            ("SELECT webhook_create('https://example.com/x', json_numbers => 'float')", "22023", "json_numbers"),
            ("SELECT webhook_create('http://example.com/x', signature_format => 'secret')", "22023", "signature_format"),
        ];
        for (sql, sqlstate, names) in refusals {
            assert_refused(sql, sqlstate, names);
        }
        let finished = one::<i64>(&format!(
            "SELECT id FROM webhook_delivery WHERE webhook_id = {id} ORDER BY id LIMIT 1"
        ))
        .unwrap();
        run(&format!("SELECT webhook_cancel({finished})"));
        assert_refused(
            &format!("SELECT webhook_cancel({finished})"),
            "55000",
            "already cancelled",
        );
        run(&format!("SELECT webhook_update({id}, active => false)"));
        assert_refused(
            &format!("SELECT webhook_replay({id}, now() - interval '1 day')"),
            "55000",
            "inactive",
        );
    }
}
