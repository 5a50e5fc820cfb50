//! `#[pg_test]`s: Webhooks: create, update, delete, deactivate and rotate, with their validation.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

    #[pg_test]
    fn create_generates_a_whsec_secret_when_none_is_given() {
        let secret = text("SELECT secret FROM webhook_create('https://example.com/hook')");
        assert!(secret.starts_with("whsec_"), "{secret}");
        let decoded = count(&format!(
            "SELECT length(decode(substr('{secret}', 7), 'base64'))::bigint"
        ));
        assert_eq!(decoded, 24);
        let other = text("SELECT secret FROM webhook_create('https://example.com/hook2')");
        assert_ne!(secret, other);
    }

    #[pg_test]
    fn create_returns_the_row_with_the_given_fields() {
        let row = text(
            "SELECT concat_ws('|', url, secret, events::text, description, name, headers::text, active) \
               FROM webhook_create('https://partner.example.com/hooks', 'my-secret', '{cliente.*,tarefa.concluida}', \
                                   'CRM parceiro', 'crm', '{\"X-Tenant\": \"42\"}')",
        );
        assert_eq!(
            row,
            "https://partner.example.com/hooks|my-secret|{cliente.*,tarefa.concluida}|CRM parceiro|crm|{\"X-Tenant\": \"42\"}|t"
        );
    }

    #[pg_test]
    fn update_changes_only_given_fields_and_hides_the_secret() {
        let id = create_webhook("https://example.com/u", "{*}");
        let returned = text(&format!(
            "SELECT concat_ws('|', description, events::text, coalesce(secret, '<hidden>'), active) \
               FROM webhook_update({id}, description => 'nova', events => '{{cliente.*}}')"
        ));
        assert_eq!(returned, "nova|{cliente.*}|<hidden>|t");
        assert_eq!(
            text(&format!("SELECT secret FROM webhook WHERE id = {id}")),
            "s3cret"
        );
        run(&format!("SELECT webhook_update({id}, secret => 'outro')"));
        assert_eq!(
            text(&format!("SELECT secret FROM webhook WHERE id = {id}")),
            "outro"
        );
        assert_eq!(
            text(&format!("SELECT description FROM webhook WHERE id = {id}")),
            "nova"
        );
    }

    #[pg_test]
    fn delete_removes_the_webhook_and_its_deliveries() {
        let id = create_webhook("https://example.com/d", "{*}");
        run("SELECT webhook_emit('cliente.criado', '{\"id\": 1}')");
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM webhook_delivery WHERE webhook_id = {id}"
            )),
            1
        );
        assert_eq!(
            one::<bool>(&format!("SELECT webhook_delete({id})")),
            Some(true)
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM webhook_delivery WHERE webhook_id = {id}"
            )),
            0
        );
        setup();
        assert_refused(
            &format!("SELECT webhook_delete({id})"),
            "P0002",
            &id.to_string(),
        );
        assert_refused(
            "SELECT webhook_update(987654, description => 'x')",
            "P0002",
            "987654",
        );
        assert_refused("SELECT webhook_retry(987654)", "P0002", "987654");
        assert_refused("SELECT * FROM webhook_ping(987654)", "P0002", "987654");
    }

    #[pg_test]
    fn bad_input_is_refused_with_22023_naming_the_field_and_nothing_written() {
        setup();
        let cases: &[(&str, &str)] = &[
            ("SELECT webhook_create('')", "url"),
            ("SELECT webhook_create('   ')", "url"),
            ("SELECT webhook_create(NULL)", "url"),
            ("SELECT webhook_create('not a url')", "url"),
            ("SELECT webhook_create('ftp://example.com/x')", "url"),
            ("SELECT webhook_create('javascript:alert(1)')", "url"),
            ("SELECT webhook_create('https://user:pass@example.com/x')", "url"),
            ("SELECT webhook_create('https://example.com/x', secret => '')", "secret"),
            ("SELECT webhook_create('https://example.com/x', secret => '   ')", "secret"),
            ("SELECT webhook_create('https://example.com/x', events => '{}')", "events"),
            ("SELECT webhook_create('https://example.com/x', events => NULL)", "events"),
            ("SELECT webhook_create('https://example.com/x', events => '{cli*}')", "events"),
            ("SELECT webhook_create('https://example.com/x', events => '{cliente.}')", "events"),
            ("SELECT webhook_create('https://example.com/x', events => '{\"cli ente\"}')", "events"),
            ("SELECT webhook_create('https://example.com/x', events => '{NULL}')", "events"),
            ("SELECT webhook_create('https://example.com/x', headers => '{\"X-A\": \"1\\r\\nX-Injected: 1\"}')", "headers"),
            ("SELECT webhook_create('https://example.com/x', headers => '{\"X-A\\nB\": \"1\"}')", "headers"),
            ("SELECT webhook_create('https://example.com/x', headers => '{\"Content-Type\": \"text/plain\"}')", "headers"),
            ("SELECT webhook_create('https://example.com/x', headers => '{\"x-webhook-signature\": \"forged\"}')", "headers"),
            ("SELECT webhook_create('https://example.com/x', headers => '{\"webhook-id\": \"x\"}')", "headers"),
            ("SELECT webhook_create('https://example.com/x', headers => '{\"X-A\": 1}')", "headers"),
            ("SELECT webhook_create('https://example.com/x', headers => '[]')", "headers"),
            ("INSERT INTO webhook (url, secret) VALUES ('gopher://x', 'k')", "url"),
            ("INSERT INTO webhook (url, secret) VALUES ('https://example.com', '')", "secret"),
            ("INSERT INTO webhook (url, secret, signature_header) VALUES ('https://example.com', 'k', 'Content-Type')", "signature_header"),
            ("INSERT INTO webhook (url, secret, signature_header) VALUES ('https://example.com', 'k', 'Bad Header')", "signature_header"),
            ("INSERT INTO webhook (url, secret, retry_schedule) VALUES ('https://example.com', 'k', '{}')", "retry_schedule"),
            ("INSERT INTO webhook (url, secret, retry_schedule) VALUES ('https://example.com', 'k', '{-1 min}')", "retry_schedule"),
            ("SELECT webhook_emit(NULL, '{}')", "event"),
            ("SELECT webhook_emit('', '{}')", "event"),
            ("SELECT webhook_emit('cliente.*', '{}')", "event"),
            ("SELECT webhook_rotate_secret(1, grace => '-1 hour')", "grace"),
        ];
        for (sql, field) in cases {
            assert_refused(sql, "22023", field);
        }
        assert_eq!(count("SELECT count(*) FROM webhook"), 0);
        assert_eq!(count("SELECT count(*) FROM webhook_delivery"), 0);
    }

    #[pg_test]
    fn updates_are_validated_like_creation_and_the_url_is_fixed() {
        setup();
        let id = create_webhook("https://example.com/fixed", "{*}");
        assert_refused(
            &format!("UPDATE webhook SET url = 'https://example.com/other' WHERE id = {id}"),
            "22023",
            "url",
        );
        assert_refused(
            &format!("UPDATE webhook SET secret = '' WHERE id = {id}"),
            "22023",
            "secret",
        );
        assert_refused(
            &format!("UPDATE webhook SET events = '{{a..b}}' WHERE id = {id}"),
            "22023",
            "events",
        );
        assert_refused(
            &format!("SELECT webhook_update({id}, events => '{{*.x}}')"),
            "22023",
            "events",
        );
        assert_refused(
            &format!("SELECT webhook_update({id}, secret => ' ')"),
            "22023",
            "secret",
        );
        assert_refused(
            &format!("SELECT webhook_update({id}, headers => '{{\"Host\": \"evil\"}}')"),
            "22023",
            "headers",
        );
        assert_eq!(
            text(&format!(
                "SELECT url || ' ' || secret || ' ' || events::text FROM webhook WHERE id = {id}"
            )),
            "https://example.com/fixed s3cret {*}"
        );
    }

    #[pg_test]
    fn no_secret_in_error_messages() {
        setup();
        let failure = failure_of(
            "SELECT webhook_create('https://user:hunter2@example.com/x', 'hunter2-secret')",
        )
        .unwrap();
        assert!(!failure.contains("hunter2"), "{failure}");
    }

    #[pg_test]
    fn deactivating_a_webhook_cancels_its_pending_deliveries() {
        let id = create_webhook("https://example.com/x", "{*}");
        run("SELECT webhook_emit('a.b', '{}')");
        run(&format!("SELECT webhook_update({id}, active => false)"));
        assert_eq!(text("SELECT status FROM webhook_delivery"), "cancelled");
        assert_eq!(one::<i32>("SELECT webhook_emit('a.b', '{}')"), Some(0));
    }

    #[pg_test]
    fn rotate_secret_keeps_the_old_one_for_the_grace_period() {
        let id = create_webhook("https://example.com/r", "{*}");
        let new_secret = text(&format!("SELECT secret FROM webhook_rotate_secret({id})"));
        assert!(new_secret.starts_with("whsec_"));
        assert_eq!(
            text(&format!(
                "SELECT previous_secret || ' ' || (previous_secret_expires_at = now() + interval '24 hours') \
                   FROM webhook WHERE id = {id}"
            )),
            "s3cret true"
        );
    }
}
