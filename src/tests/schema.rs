//! `#[pg_test]`s: The extension's objects: tables and their columns, defaults and constraints, grants, and
//! the search_path its functions run with.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

    #[pg_test]
    fn tables_have_the_spec_columns() {
        let columns = |table: &str| -> String {
            text(&format!(
                "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY column_name) \
                   FROM information_schema.columns WHERE table_name = '{table}'"
            ))
        };
        let webhook = columns("webhook");
        for col in [
            "id:bigint",
            "name:text",
            "url:text",
            "description:text",
            "secret:text",
            "events:ARRAY",
            "headers:jsonb",
            "signature_header:text",
            "retry_schedule:ARRAY",
            "active:boolean",
            "disabled_reason:text",
            "created_at:timestamp with time zone",
            "updated_at:timestamp with time zone",
        ] {
            assert!(webhook.contains(col), "webhook lacks {col}: {webhook}");
        }
        let delivery = columns("webhook_delivery");
        for col in [
            "id:bigint",
            "webhook_id:bigint",
            "event_id:uuid",
            "event:text",
            "body:text",
            "status:text",
            "attempts:integer",
            "next_attempt_at:timestamp with time zone",
            "response_status:integer",
            "response_body:text",
            "error:text",
            "duration_ms:integer",
            "created_at:timestamp with time zone",
            "updated_at:timestamp with time zone",
            "delivered_at:timestamp with time zone",
        ] {
            assert!(
                delivery.contains(col),
                "webhook_delivery lacks {col}: {delivery}"
            );
        }
        let attempt = columns("webhook_attempt");
        for col in [
            "id:bigint",
            "delivery_id:bigint",
            "attempt:integer",
            "manual:boolean",
            "started_at:timestamp with time zone",
            "duration_ms:integer",
            "response_status:integer",
            "response_body:text",
            "error:text",
        ] {
            assert!(
                attempt.contains(col),
                "webhook_attempt lacks {col}: {attempt}"
            );
        }
        let stats = columns("webhook_stats");
        for col in [
            "webhook_id",
            "deliveries_total",
            "deliveries_succeeded",
            "deliveries_failed",
            "deliveries_pending",
            "success_rate",
            "avg_duration_ms",
            "p95_duration_ms",
            "retries",
            "last_success_at",
            "last_failure_at",
            "consecutive_failures",
        ] {
            assert!(stats.contains(col), "webhook_stats lacks {col}: {stats}");
        }
    }

    #[pg_test]
    fn defaults_and_constraints_follow_the_spec() {
        let id = one::<i64>(
            "INSERT INTO webhook (url, secret) VALUES ('https://example.com/h', 'k') RETURNING id",
        )
        .unwrap();
        assert_eq!(
            text(&format!(
                "SELECT events::text || ' ' || headers::text || ' ' || signature_header || ' ' || active \
                   FROM webhook WHERE id = {id}"
            )),
            "{*} {} X-Webhook-Signature true"
        );
    }

    #[pg_test]
    fn secret_is_not_readable_by_public() {
        assert_eq!(
            one::<bool>("SELECT has_column_privilege('public', 'webhook', 'secret', 'SELECT')"),
            Some(false)
        );
        assert_eq!(
            one::<bool>("SELECT has_table_privilege('public', 'webhook', 'SELECT')"),
            Some(false)
        );
        run("CREATE ROLE webhook_ext_test_nobody");
        run("SET LOCAL ROLE webhook_ext_test_nobody");
        setup();
        assert_refused("SELECT secret FROM webhook", "42501", "webhook");
        assert_refused(
            "SELECT webhook_create('https://example.com/x')",
            "42501",
            "webhook_create",
        );
        assert_refused("SELECT webhook_emit('a.b', '{}')", "42501", "webhook_emit");
        run("RESET ROLE");
    }

    #[pg_test]
    fn no_function_of_the_extension_is_executable_by_public() {
        let executable = text(
            "SELECT coalesce(string_agg(p.proname, ', '), '') FROM pg_proc p \
               JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e' \
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'webhook_ext' \
              WHERE has_function_privilege('public', p.oid, 'EXECUTE') \
                AND p.pronamespace <> 'tests'::regnamespace \
                AND p.proname NOT IN ('webhook_events_match', 'webhook_delivery_in_flight')",
        );
        // webhook_delivery_in_flight is called by the view webhook_delivery, with the privileges
        // of whoever reads the view; it tells whether a delivery id is being sent, nothing more.
        assert_eq!(executable, "");
    }

    #[pg_test]
    fn security_definer_functions_pin_their_search_path() {
        // The SQL ones pin their search_path; the native trigger resolves nothing through it
        // (see src/api/trigger.rs and the test below).
        let unpinned_definers = text(
            "SELECT string_agg(p.proname || ' ' || l.lanname || ' ' \
                               || coalesce(array_to_string(p.proconfig, ','), '-'), '; ' ORDER BY p.proname) \
               FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang \
               JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e' \
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'webhook_ext' \
              WHERE p.prosecdef \
                AND NOT coalesce(p.proconfig @> '{\"search_path=pg_catalog, pg_temp\"}', false)",
        );
        assert_eq!(unpinned_definers, "webhook_trigger c -");
        assert!(
            count(
                "SELECT count(*) FROM pg_proc p \
                   JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e' \
                   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'webhook_ext' \
                  WHERE p.prosecdef"
            ) >= 8
        );

        // A role allowed to emit shadows a function the emit path calls: it is not used, and
        // emitting gives it no access to the secrets.
        create_webhook("https://example.com/x", "{*}");
        run("CREATE ROLE webhook_ext_test_app");
        run("GRANT EXECUTE ON FUNCTION webhook_emit(text, jsonb, text) TO webhook_ext_test_app");
        run("CREATE SCHEMA evil AUTHORIZATION webhook_ext_test_app");
        run("SET LOCAL ROLE webhook_ext_test_app");
        run("CREATE FUNCTION evil.gen_random_uuid() RETURNS uuid LANGUAGE sql AS $$ SELECT '00000000-0000-0000-0000-000000000bad'::uuid $$");
        run("SET LOCAL search_path = evil, public");
        assert_eq!(one::<i32>("SELECT webhook_emit('a.b', '{}')"), Some(1));
        setup();
        assert_refused("SELECT secret FROM webhook", "42501", "webhook");
        run("RESET ROLE");
        run("RESET search_path");
        assert_eq!(
            count("SELECT count(*) FROM webhook_delivery WHERE event_id = '00000000-0000-0000-0000-000000000bad'"),
            0
        );
        assert_eq!(count("SELECT count(*) FROM webhook_delivery"), 1);
    }

    #[pg_test]
    fn the_trigger_ignores_what_the_writer_puts_on_its_search_path() {
        // A role that may only write its own table shadows every function the trigger path
        // could call, and puts its schema first: the event still gets a real id, the real
        // matching and the row as Postgres renders it; the role still cannot read secrets.
        setup();
        create_webhook("https://example.com/x", "{pedido.*}");
        run("CREATE ROLE webhook_ext_test_writer");
        run("GRANT EXECUTE ON FUNCTION webhook_trigger() TO webhook_ext_test_writer");
        run("CREATE SCHEMA evil AUTHORIZATION webhook_ext_test_writer");
        run("SET LOCAL ROLE webhook_ext_test_writer");
        run("CREATE TABLE evil.pedido (id int, total numeric)");
        run("CREATE TRIGGER pedido_webhook AFTER INSERT ON evil.pedido FOR EACH ROW EXECUTE FUNCTION public.webhook_trigger('pedido')");
        run("CREATE FUNCTION evil.gen_random_uuid() RETURNS uuid LANGUAGE sql AS $$ SELECT '00000000-0000-0000-0000-000000000bad'::uuid $$");
        run("CREATE FUNCTION evil.row_to_json(r record) RETURNS json LANGUAGE plpgsql AS $$ BEGIN RETURN json_build_object('forged', true); END $$");
        run("CREATE FUNCTION evil.webhook_events_match(text[], text) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$");
        run("SET LOCAL search_path = evil, pg_catalog, public");
        run("INSERT INTO evil.pedido VALUES (7, 19.90)");
        assert_refused("SELECT secret FROM public.webhook", "42501", "webhook");
        run("RESET ROLE");
        run("RESET search_path");
        let body = text("SELECT body FROM webhook_delivery WHERE event = 'pedido.created'");
        assert!(
            body.ends_with(r#""data":{"id":7,"total":19.90}}"#),
            "{body}"
        );
        assert_eq!(
            count("SELECT count(*) FROM webhook_delivery WHERE event_id = '00000000-0000-0000-0000-000000000bad'"),
            0
        );
        assert_eq!(
            one::<bool>("SELECT (body::json->>'id') = event_id::text FROM webhook_delivery"),
            Some(true)
        );
    }
}
