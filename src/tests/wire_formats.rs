//! `#[pg_test]`s of the per-webhook wire formats (SPEC §11): the columns, their validation on
//! every path that writes a webhook, and the body each webhook gets queued.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::{failure_of, one, run, setup, text};

    fn id(sql: &str) -> i64 {
        one::<i64>(sql).unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    /// `sql` fails with 22023 and a message that starts by naming `field`.
    fn assert_invalid(sql: &str, field: &str) {
        let failure =
            failure_of(sql).unwrap_or_else(|| panic!("expected 22023 from {sql}, it succeeded"));
        assert!(
            failure.starts_with(&format!("22023: invalid {field}: ")),
            "{sql} → {failure}"
        );
    }

    /// The body queued for a webhook by the last event.
    fn body_for(webhook: i64) -> String {
        text(&format!(
            "SELECT body FROM webhook_delivery WHERE webhook_id = {webhook} ORDER BY id DESC LIMIT 1"
        ))
    }

    #[pg_test]
    fn defaults_are_todays_format_and_body() {
        let webhook = id("SELECT id FROM webhook_create('https://example.com/d', 'k', '{fmt.*}')");
        assert_eq!(
            text(&format!(
                "SELECT concat_ws(' ', envelope IS NULL, signature_header, signature_format, \
                        signature_input, json_numbers) FROM webhook WHERE id = {webhook}"
            )),
            "t X-Webhook-Signature sha256=hex body exact"
        );
        run(r#"SELECT webhook_emit('fmt.fatura', '{"valor": 199.90, "2": "b", "1": "a"}')"#);
        let (event_id, body) = (
            text("SELECT event_id::text FROM webhook_delivery ORDER BY id DESC LIMIT 1"),
            body_for(webhook),
        );
        let timestamp = text(&format!(
            "SELECT (regexp_match('{body}', '\"timestamp\":\"([^\"]+)\"'))[1]"
        ));
        // Today's body: the event's own, built once, numbers and key order as Postgres wrote them.
        assert_eq!(
            body,
            format!(
                r#"{{"id":"{event_id}","event":"fmt.fatura","timestamp":"{timestamp}","data":{{"1":"a","2":"b","valor":199.90}}}}"#
            )
        );
        // An envelope that renames nothing is stored as the default.
        run(&format!(
            "SELECT webhook_update({webhook}, envelope => '{{}}')"
        ));
        assert_eq!(
            text(&format!(
                "SELECT (envelope IS NULL)::text FROM webhook WHERE id = {webhook}"
            )),
            "true"
        );
    }

    #[pg_test]
    fn create_and_update_take_every_format_column_by_name() {
        let webhook = id(
            r#"SELECT id FROM webhook_create('https://example.com/f', 'k',
                signature_header => 'X-Signature', envelope => '{"event": "event_type", "timestamp": "created_at"}',
                signature_format => 'hex', signature_input => 'python_sorted_json', json_numbers => 'javascript')"#,
        );
        let columns = |webhook: i64| {
            text(&format!(
                "SELECT concat_ws(' ', coalesce(envelope::text, '-'), signature_header, signature_format, \
                        signature_input, json_numbers) FROM webhook WHERE id = {webhook}"
            ))
        };
        assert_eq!(
            columns(webhook),
            r#"{"event": "event_type", "timestamp": "created_at"} X-Signature hex python_sorted_json javascript"#
        );
        // NULL leaves a column as it is.
        run(&format!(
            "SELECT webhook_update({webhook}, description => 'x')"
        ));
        assert_eq!(
            columns(webhook),
            r#"{"event": "event_type", "timestamp": "created_at"} X-Signature hex python_sorted_json javascript"#
        );
        run(&format!(
            "SELECT webhook_update({webhook}, signature_header => 'X-Token', envelope => '{{}}', \
                    signature_format => 'secret', signature_input => 'body', json_numbers => 'exact')"
        ));
        assert_eq!(columns(webhook), "- X-Token secret body exact");
    }

    #[pg_test]
    fn bad_formats_are_refused_on_every_path_naming_the_field() {
        setup();
        let webhook = id("SELECT id FROM webhook_create('https://example.com/v', 'k')");
        let cases = [
            ("SELECT webhook_create('https://example.com/x', signature_format => 'sha1=hex')", "signature_format"),
            ("SELECT webhook_create('https://example.com/x', signature_format => NULL)", "signature_format"),
            ("SELECT webhook_create('https://example.com/x', signature_input => 'raw')", "signature_input"),
            ("SELECT webhook_create('https://example.com/x', json_numbers => 'float')", "json_numbers"),
            ("SELECT webhook_create('https://example.com/x', envelope => '[]')", "envelope"),
            (r#"SELECT webhook_create('https://example.com/x', envelope => '{"evento": "x"}')"#, "envelope"),
            (r#"SELECT webhook_create('https://example.com/x', envelope => '{"event": "data"}')"#, "envelope"),
            ("SELECT webhook_create('https://example.com/x', signature_header => 'Bad Header')", "signature_header"),
            ("SELECT webhook_create('https://example.com/x', signature_header => 'Content-Type')", "signature_header"),
            ("SELECT webhook_create('https://example.com/x', signature_format => 'none', signature_input => 'python_sorted_json')", "signature_input"),
            // The secret itself would travel in clear.
            ("SELECT webhook_create('http://example.com/x', signature_format => 'secret')", "signature_format"),
            ("SELECT webhook_create('https://example.com/x', 'two words', signature_format => 'secret')", "secret"),
            ("INSERT INTO webhook (url, secret, signature_format) VALUES ('https://example.com', 'k', 'HEX')", "signature_format"),
            ("INSERT INTO webhook (url, secret, signature_format) VALUES ('http://example.com', 'k', 'secret')", "signature_format"),
            ("INSERT INTO webhook (url, secret, json_numbers) VALUES ('https://example.com', 'k', 'js')", "json_numbers"),
            (r#"INSERT INTO webhook (url, secret, envelope) VALUES ('https://example.com', 'k', '{"id": 1}')"#, "envelope"),
        ];
        for (sql, field) in cases {
            assert_invalid(sql, field);
        }
        for (set, field) in [
            ("signature_format = 'hmac'", "signature_format"),
            ("signature_input = 'sorted'", "signature_input"),
            ("json_numbers = 'ecmascript'", "json_numbers"),
            (r#"envelope = '{"data": ""}'"#, "envelope"),
        ] {
            assert_invalid(
                &format!("UPDATE webhook SET {set} WHERE id = {webhook}"),
                field,
            );
            let argument = set.replace(" = ", " => ");
            assert_invalid(
                &format!("SELECT webhook_update({webhook}, {argument})"),
                field,
            );
        }
        assert_invalid(
            &format!("SELECT webhook_update({webhook}, signature_format => 'none', signature_input => 'python_sorted_json')"),
            "signature_input",
        );
        // Nothing half-written: the webhook is as it was, and no other was created.
        assert_eq!(
            text(&format!(
                "SELECT concat_ws(' ', count(*), min(signature_format), min(signature_input), min(json_numbers)) \
                   FROM webhook WHERE id = {webhook} OR url <> 'https://example.com/v'"
            )),
            "1 sha256=hex body exact"
        );
        // A secret sent as is: https, or an address the operator listed (127.0.0.1/32 here).
        run("SELECT webhook_create('https://example.com/t', 'tok', signature_format => 'secret')");
        let local = id("SELECT id FROM webhook_create('http://127.0.0.1:9/t', 'tok', signature_format => 'secret')");
        // The address leaves webhook.allowed_networks: updates that leave the format, URL and
        // secret alone (the worker disabling the webhook, say) still work; changing them is
        // checked again.
        run("SET LOCAL webhook.allowed_networks = ''");
        run(&format!(
            "UPDATE webhook SET active = false, disabled_reason = 'gone' WHERE id = {local}"
        ));
        assert_invalid(
            &format!("UPDATE webhook SET secret = 'tok2' WHERE id = {local}"),
            "signature_format",
        );
    }

    #[pg_test]
    fn each_webhook_gets_its_own_body_from_emit_and_from_the_trigger() {
        let default =
            id("SELECT id FROM webhook_create('https://example.com/a', 'k', '{pedido.*}')");
        let portuguese = id(
            r#"SELECT id FROM webhook_create('https://example.com/b', 'k', '{pedido.*}',
                envelope => '{"event": "evento", "data": "dados", "id": null}')"#,
        );
        let javascript = id(
            r#"SELECT id FROM webhook_create('https://example.com/c', 'k', '{pedido.*}',
                envelope => '{"event": "event_type", "timestamp": "created_at"}', json_numbers => 'javascript')"#,
        );

        run(r#"SELECT webhook_emit('pedido.pago', '{"total": 199.90, "10": 1, "2": 2}')"#);
        let plain = body_for(default);
        assert!(plain.starts_with(r#"{"id":""#), "{plain}");
        assert!(
            plain.ends_with(r#""data":{"2":2,"10":1,"total":199.90}}"#),
            "{plain}"
        );
        let pt = body_for(portuguese);
        assert!(
            pt.starts_with(r#"{"evento":"pedido.pago","timestamp":""#),
            "{pt}"
        );
        assert!(
            pt.ends_with(r#","dados":{"2":2,"10":1,"total":199.90}}"#),
            "{pt}"
        );
        let js = body_for(javascript);
        assert!(
            js.starts_with(r#"{"id":""#)
                && js.contains(r#","event_type":"pedido.pago","created_at":""#),
            "{js}"
        );
        assert!(
            js.ends_with(r#","data":{"2":2,"10":1,"total":199.9}}"#),
            "{js}"
        );
        // One event: the same event id for every subscriber.
        assert_eq!(
            id("SELECT count(DISTINCT event_id) FROM webhook_delivery WHERE event = 'pedido.pago'"),
            1
        );

        // The native trigger: a numeric(12,2) column, keys as the row has them.
        run("CREATE TABLE pedido (id int PRIMARY KEY, total numeric(12,2), \"1\" text)");
        run("CREATE TRIGGER pedido_webhook AFTER INSERT ON pedido FOR EACH ROW EXECUTE FUNCTION webhook_trigger('pedido')");
        run("INSERT INTO pedido VALUES (7, 50.10, 'x')");
        assert!(
            body_for(default).ends_with(r#""data":{"id":7,"total":50.10,"1":"x"}}"#),
            "{}",
            body_for(default)
        );
        assert!(
            body_for(portuguese).ends_with(r#""dados":{"id":7,"total":50.10,"1":"x"}}"#),
            "{}",
            body_for(portuguese)
        );
        assert!(
            body_for(javascript).ends_with(r#""data":{"1":"x","id":7,"total":50.1}}"#),
            "{}",
            body_for(javascript)
        );
    }
}
