//! `#[pg_test]`s: SQL behaviour inside one (rolled-back) transaction. Worker behaviour needs
//! real commits and is tested in `tests/` against a real cluster and receiver.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn run(sql: &str) {
        Spi::run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn one<T: pgrx::FromDatum + pgrx::IntoDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn text(sql: &str) -> String {
        one::<String>(sql).unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    fn count(sql: &str) -> i64 {
        one::<i64>(sql).unwrap_or(0)
    }

    /// Runs `sql` in a subtransaction; returns "SQLSTATE: message" if it failed.
    fn failure_of(sql: &str) -> Option<String> {
        Spi::get_one_with_args::<String>("SELECT pg_temp.failure_of($1)", &[sql.into()]).unwrap()
    }

    fn setup() {
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

    fn assert_refused(sql: &str, sqlstate: &str, field: &str) {
        let failure = failure_of(sql)
            .unwrap_or_else(|| panic!("expected {sqlstate} from {sql}, it succeeded"));
        assert!(
            failure.starts_with(&format!("{sqlstate}: ")),
            "{sql} → {failure}"
        );
        assert!(
            failure.contains(field),
            "message of {sql} should name {field}: {failure}"
        );
    }

    fn create_webhook(url: &str, events: &str) -> i64 {
        one::<i64>(&format!(
            "SELECT id FROM webhook_create('{url}', 's3cret', '{events}')"
        ))
        .unwrap()
    }

    // ---------------------------------------------------------------------------------
    // Schema
    // ---------------------------------------------------------------------------------

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
        run("GRANT EXECUTE ON FUNCTION webhook_emit(text, jsonb) TO webhook_ext_test_app");
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

    // ---------------------------------------------------------------------------------
    // Subscriptions
    // ---------------------------------------------------------------------------------

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

    // ---------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------

    #[pg_test]
    fn the_walk_finds_new_deliveries_and_their_outcome_is_a_hot_update_plus_one_attempt() {
        let webhook = create_webhook("https://example.com/walk", "{walk.*}");
        run("SELECT webhook_emit('walk.x', jsonb_build_object('n', g)) FROM generate_series(1, 3) g");
        // Other tests' transactions take ids from the same sequence meanwhile: these three
        // are in order, not necessarily consecutive.
        let ids: Vec<i64> = Spi::connect(|client| {
            client
                .select("SELECT id FROM webhook_delivery ORDER BY id", None, &[])
                .unwrap()
                .map(|row| row.get::<i64>(1).unwrap().unwrap())
                .collect()
        });
        assert_eq!(ids.len(), 3);
        let claimed = Spi::connect_mut(|client| {
            let installation = crate::store::installation(client).unwrap().unwrap();
            let statements = crate::store::Statements::new(installation);
            let found = statements.walk(client, ids[0] - 1, 2).unwrap();
            // Two asked for, in id order, each deliverable, its webhook active.
            assert_eq!(
                found.iter().map(|f| f.delivery_id).collect::<Vec<_>>(),
                ids[..2].to_vec()
            );
            assert!(found
                .iter()
                .all(|f| f.deliverable && f.webhook_active == Some(true) && f.attempts == 0));
            let webhooks = statements.webhooks(client, &[webhook]).unwrap();
            let claim = found[0].clone().claim(&webhooks[&webhook], "pending");
            assert_eq!((claim.attempt, claim.schedule_position), (1, 1));
            assert_eq!(claim.secret, "s3cret");
            let shown = format!("{claim:?}");
            assert!(!shown.contains("s3cret"), "{shown}");
            let outcome = webhook_delivery::http::Outcome {
                kind: webhook_delivery::http::OutcomeKind::Success,
                status: Some(200),
                body: Some("ok".into()),
                error: None,
                duration: std::time::Duration::from_millis(3),
                retry_after: None,
            };
            let (recorded, _) = crate::attempt::record_for(
                &claim,
                &outcome,
                std::time::SystemTime::now(),
                false,
                &[std::time::Duration::ZERO],
            );
            statements.record(client, &[recorded]).unwrap();
            claim
        });
        assert_eq!(
            text(&format!(
                "SELECT status || ' ' || attempts || ' ' || response_status FROM webhook_delivery WHERE id = {}",
                claimed.delivery_id
            )),
            "succeeded 1 200"
        );
        assert_eq!(count("SELECT count(*) FROM webhook_attempt"), 1);
        // No index covers what the outcome changes: the delivery's new version is a HOT
        // update, which logs only the changed columns and touches no index.
        assert_eq!(
            count(
                "SELECT n_tup_upd - n_tup_hot_upd FROM pg_stat_xact_user_tables \
                  WHERE relname = 'webhook_delivery_store'"
            ),
            0
        );
        assert_eq!(
            count("SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'webhook_delivery_store'"),
            1
        );
        // The others stay pending and owe nothing to the due table.
        assert_eq!(
            count(
                "SELECT count(*) FROM webhook_delivery WHERE status = 'pending' AND attempts = 0"
            ),
            2
        );
        assert_eq!(count("SELECT count(*) FROM webhook_delivery_due"), 0);
    }

    #[pg_test]
    fn the_worker_plans_read_by_primary_key_whatever_the_statistics_say() {
        // Statistics of a table that looked nearly empty, or nearly all finished, must not
        // turn the worker's cached (generic) plans into scans of the whole table.
        create_webhook("https://example.com/plan", "{plan.*}");
        run("SELECT webhook_emit('plan.x', jsonb_build_object('n', g)) FROM generate_series(1, 2000) g");
        run("UPDATE webhook_delivery_store SET status = 'succeeded', attempts = 1 WHERE id % 500 <> 0");
        run("ANALYZE webhook_delivery_store");
        let (walk_sql, record_sql, recheck_sql, due_sql) = Spi::connect_mut(|client| {
            let installation = crate::store::installation(client).unwrap().unwrap();
            let statements = crate::store::Statements::new(installation);
            (
                statements.walk_sql().to_string(),
                statements.record_sql().to_string(),
                statements.recheck_sql().to_string(),
                statements.due_sql().to_string(),
            )
        });
        // The worker's session settings (worker.rs), and the plan it caches.
        run(
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_nestloop = off; \
             SET LOCAL plan_cache_mode = force_generic_plan",
        );
        run(&format!("PREPARE walk_plan(bigint, bigint) AS {walk_sql}"));
        run(&format!(
            "PREPARE recheck_plan(bigint[], bigint[]) AS {recheck_sql}"
        ));
        run(&format!(
            "PREPARE due_plan(bigint, bigint[], int[], int) AS {due_sql}"
        ));
        run(&format!(
            "PREPARE record_plan(bigint[], int[], bool[], text[], bigint[], float8[], int[], int[], text[], text[], bool[]) \
             AS {record_sql}"
        ));
        let explain = |sql: &str| -> String {
            Spi::connect(|client| {
                client
                    .select(sql, None, &[])
                    .unwrap()
                    .map(|row| row.get::<String>(1).unwrap().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        };
        let walk = explain("EXPLAIN (COSTS OFF) EXECUTE walk_plan(1000, 100)");
        let record = explain(
            "EXPLAIN (COSTS OFF) EXECUTE record_plan('{500}', '{1}', '{f}', '{succeeded}', \
             '{NULL}', '{0}', '{1}', '{200}', '{\"\"}', '{NULL}', '{f}')",
        );
        let recheck = explain("EXPLAIN (COSTS OFF) EXECUTE recheck_plan('{10}', '{12}')");
        let due = explain("EXPLAIN (COSTS OFF) EXECUTE due_plan(100, '{}', '{}', 10)");
        run("DEALLOCATE walk_plan; DEALLOCATE record_plan; DEALLOCATE recheck_plan; DEALLOCATE due_plan");
        // One range scan per gap: the table is never read whole.
        assert!(
            recheck.contains("Index Cond: ((id >= gap.from_id)"),
            "{recheck}"
        );
        assert!(!due.contains("Seq Scan on webhook_delivery_store"), "{due}");
        assert!(due.contains("webhook_delivery_store_pkey"), "{due}");
        assert!(walk.contains("webhook_delivery_store_pkey"), "{walk}");
        assert!(!walk.contains("Sort"), "{walk}");
        assert!(record.contains("webhook_delivery_store_pkey"), "{record}");
        assert!(
            !record.contains("Seq Scan on webhook_delivery_store"),
            "{record}"
        );
    }

    #[pg_test]
    fn emit_queues_one_pending_delivery_per_matching_active_webhook() {
        let all = create_webhook("https://example.com/all", "{*}");
        let clientes = create_webhook("https://example.com/c", "{cliente.*}");
        let exact = create_webhook("https://example.com/e", "{cliente.criado}");
        let tarefas = create_webhook("https://example.com/t", "{tarefa.*}");
        let inactive = create_webhook("https://example.com/i", "{*}");
        run(&format!(
            "UPDATE webhook SET active = false WHERE id = {inactive}"
        ));

        assert_eq!(
            one::<i32>("SELECT webhook_emit('cliente.criado', '{\"id\": 7}')"),
            Some(3)
        );
        assert_eq!(
            one::<i32>("SELECT webhook_emit('cliente.atualizado', '{\"id\": 7}')"),
            Some(2)
        );
        assert_eq!(
            one::<i32>("SELECT webhook_emit('clientes.x', '{}')"),
            Some(1)
        );
        assert_eq!(one::<i32>("SELECT webhook_emit('cliente', '{}')"), Some(1));
        let per_webhook = text(
            "SELECT string_agg(webhook_id || ':' || n, ',' ORDER BY webhook_id) \
               FROM (SELECT webhook_id, count(*) n FROM webhook_delivery GROUP BY 1) s",
        );
        assert_eq!(per_webhook, format!("{all}:4,{clientes}:2,{exact}:1"));
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM webhook_delivery WHERE webhook_id IN ({tarefas}, {inactive})"
            )),
            0
        );

        // pending, due now, one event id shared by all subscribers of one event
        assert_eq!(
            count("SELECT count(*) FROM webhook_delivery WHERE status = 'pending' AND attempts = 0 AND next_attempt_at = now()"),
            7
        );
        assert_eq!(count("SELECT count(DISTINCT event_id) FROM webhook_delivery WHERE event = 'cliente.criado'"), 1);
        assert_eq!(
            count("SELECT count(DISTINCT event_id) FROM webhook_delivery"),
            4
        );
        assert_eq!(
            one::<i32>("SELECT webhook_emit('nobody.listens', '{}')"),
            Some(1),
            "only '*' listens"
        );
        run(&format!("SELECT webhook_update({all}, active => false)"));
        assert_eq!(
            one::<i32>("SELECT webhook_emit('nobody.listens', '{}')"),
            Some(0)
        );
    }

    #[pg_test]
    fn the_event_timestamp_is_never_later_than_its_emission() {
        // Whole seconds, truncated. Emitted in the second half of a second, a rounded stamp
        // would be up to 0.5 s in the future of the clock that emitted it (and of its commit).
        create_webhook("https://example.com/clock", "{*}");
        cliente_table();
        let late_in_a_second = "DO $$ BEGIN \
            WHILE extract(microseconds FROM clock_timestamp())::int % 1000000 < 600000 LOOP END LOOP; \
            END $$";
        run(late_in_a_second);
        run("SELECT webhook_emit('clock.tick', '{}')");
        run(late_in_a_second);
        run("INSERT INTO cliente (nome) VALUES ('Maria')");
        assert_eq!(
            count(
                "SELECT count(*) FROM webhook_delivery \
                  WHERE (body::json->>'timestamp')::timestamptz <= clock_timestamp()"
            ),
            2
        );
    }

    #[pg_test]
    fn emit_body_is_the_compact_spec_envelope() {
        create_webhook("https://example.com/all", "{*}");
        run(
            r#"SELECT webhook_emit('cliente.criado', '{"nome": "José", "cidade": "São Paulo", "n": 1.50, "tags": ["a", "b"], "x": null}')"#,
        );
        let body = text("SELECT body FROM webhook_delivery");
        let event_id = text("SELECT event_id::text FROM webhook_delivery");
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["id"], event_id.as_str());
        assert_eq!(parsed["event"], "cliente.criado");
        let timestamp = parsed["timestamp"].as_str().unwrap();
        assert_eq!(timestamp.len(), "2024-01-01T10:00:00Z".len(), "{timestamp}");
        assert!(timestamp.ends_with('Z'));
        let prefix = format!(
            r#"{{"id":"{event_id}","event":"cliente.criado","timestamp":"{timestamp}","data":"#
        );
        assert!(body.starts_with(&prefix), "{body}");
        assert!(
            body.ends_with(
                r#""data":{"n":1.50,"x":null,"nome":"José","tags":["a","b"],"cidade":"São Paulo"}}"#
            ),
            "{body}"
        );
        // the timestamp is the emission time, UTC
        assert_eq!(
            one::<bool>(&format!("SELECT abs(extract(epoch FROM '{timestamp}'::timestamptz - clock_timestamp())) < 60")),
            Some(true)
        );
    }

    fn cliente_table() {
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

    fn last_body() -> serde_json::Value {
        serde_json::from_str(&text(
            "SELECT body FROM webhook_delivery ORDER BY id DESC LIMIT 1",
        ))
        .unwrap()
    }

    #[pg_test]
    fn trigger_insert_sends_the_new_row_with_every_type() {
        create_webhook("https://example.com/c", "{cliente.*}");
        cliente_table();
        run(r#"INSERT INTO cliente (nome, email, saldo, tags, extra)
               VALUES ('João Ação', NULL, 1234.50, '{vip,"São Paulo"}', '{"plano": "pro", "n": [1, 2]}')"#);
        assert_eq!(last_body()["event"], "cliente.criado");
        // Column order, exact numeric text, accents, arrays, jsonb, NULL and timestamps as
        // row_to_json() renders them.
        let raw = text("SELECT body FROM webhook_delivery ORDER BY id DESC LIMIT 1");
        assert!(
            raw.ends_with(concat!(
                r#""data":{"id":1,"nome":"João Ação","email":null,"ativo":true,"saldo":1234.50,"#,
                r#""tags":["vip","São Paulo"],"extra":{"n":[1,2],"plano":"pro"},"#,
                r#""criado_em":"2024-01-01T10:00:00+00:00"}}"#
            )),
            "{raw}"
        );
    }

    #[pg_test]
    fn trigger_update_sends_changed_columns_only_and_nothing_when_nothing_changed() {
        create_webhook("https://example.com/c", "{cliente.*}");
        cliente_table();
        run("INSERT INTO cliente (nome, email) VALUES ('Ana', 'ana@example.com')");
        run("UPDATE cliente SET email = 'ana@novo.com', saldo = 10, nome = 'Ana' WHERE id = 1");
        let body = last_body();
        assert_eq!(body["event"], "cliente.atualizado");
        assert_eq!(body["data"]["email"], "ana@novo.com");
        let raw = text("SELECT body FROM webhook_delivery ORDER BY id DESC LIMIT 1");
        assert!(
            raw.ends_with(concat!(
                r#""alteracoes":{"email":{"anterior":"ana@example.com","novo":"ana@novo.com"},"#,
                r#""saldo":{"anterior":0.00,"novo":10.00}}}}"#
            )),
            "{raw}"
        );
        let before = count("SELECT count(*) FROM webhook_delivery");
        run("UPDATE cliente SET nome = 'Ana' WHERE id = 1");
        assert_eq!(
            count("SELECT count(*) FROM webhook_delivery"),
            before,
            "a no-op UPDATE must emit nothing"
        );
        run("UPDATE cliente SET email = NULL WHERE id = 1");
        assert_eq!(
            last_body()["data"]["alteracoes"],
            serde_json::json!({"email": {"anterior": "ana@novo.com", "novo": null}})
        );
    }

    #[pg_test]
    fn trigger_delete_sends_the_old_row() {
        create_webhook("https://example.com/c", "{cliente.*}");
        cliente_table();
        run("INSERT INTO cliente (nome) VALUES ('Bia')");
        run("DELETE FROM cliente WHERE id = 1");
        let body = last_body();
        assert_eq!(body["event"], "cliente.excluido");
        assert_eq!(body["data"]["nome"], "Bia");
        assert_eq!(body["data"].get("alteracoes"), None);
    }

    #[pg_test]
    fn trigger_with_one_prefix_names_created_updated_deleted() {
        create_webhook("https://example.com/t", "{tarefa.*}");
        run("CREATE TABLE tarefa (id int PRIMARY KEY, titulo text, status text)");
        run("CREATE TRIGGER tarefa_webhook AFTER INSERT OR UPDATE OR DELETE ON tarefa FOR EACH ROW EXECUTE FUNCTION webhook_trigger('tarefa')");
        run("INSERT INTO tarefa VALUES (1, 'Ligar', 'ABERTA')");
        run("UPDATE tarefa SET status = 'CONCLUIDA'");
        run("DELETE FROM tarefa");
        assert_eq!(
            text("SELECT string_agg(event, ',' ORDER BY id) FROM webhook_delivery"),
            "tarefa.created,tarefa.updated,tarefa.deleted"
        );
    }

    #[pg_test]
    fn trigger_with_when_clause_emits_tarefa_concluida() {
        create_webhook("https://example.com/t", "{tarefa.concluida}");
        run("CREATE TABLE tarefa (id int PRIMARY KEY, titulo text, status text)");
        run("CREATE TRIGGER tarefa_concluida AFTER UPDATE ON tarefa FOR EACH ROW \
             WHEN (NEW.status = 'CONCLUIDA' AND OLD.status IS DISTINCT FROM 'CONCLUIDA') \
             EXECUTE FUNCTION webhook_trigger('tarefa.criada', 'tarefa.concluida', 'tarefa.excluida')");
        run("INSERT INTO tarefa VALUES (1, 'Ligar', 'ABERTA'), (2, 'Enviar', 'ABERTA')");
        run("UPDATE tarefa SET titulo = 'Ligar já' WHERE id = 1");
        run("UPDATE tarefa SET status = 'CONCLUIDA' WHERE id = 2");
        run("UPDATE tarefa SET titulo = 'Enviar hoje' WHERE id = 2");
        assert_eq!(count("SELECT count(*) FROM webhook_delivery"), 1);
        assert_eq!(last_body()["data"]["id"], 2);
        assert_eq!(last_body()["event"], "tarefa.concluida");
    }

    #[pg_test]
    fn trigger_misuse_is_refused() {
        setup();
        run("CREATE TABLE evento (id int)");
        run("CREATE TRIGGER evento_stmt AFTER INSERT ON evento FOR EACH STATEMENT EXECUTE FUNCTION webhook_trigger('evento')");
        assert_refused("INSERT INTO evento VALUES (1)", "0A000", "FOR EACH ROW");
        run("DROP TRIGGER evento_stmt ON evento");
        run("CREATE TRIGGER evento_two AFTER INSERT ON evento FOR EACH ROW EXECUTE FUNCTION webhook_trigger('a.b', 'c.d')");
        assert_refused(
            "INSERT INTO evento VALUES (1)",
            "22023",
            "three event names",
        );
        run("DROP TRIGGER evento_two ON evento");
        run("CREATE TRIGGER evento_bad AFTER INSERT ON evento FOR EACH ROW EXECUTE FUNCTION webhook_trigger('mal formado')");
        assert_refused("INSERT INTO evento VALUES (1)", "22023", "event");
        assert_eq!(count("SELECT count(*) FROM evento"), 0);
    }

    #[pg_test]
    fn a_rolled_back_change_leaves_no_delivery() {
        setup();
        create_webhook("https://example.com/c", "{cliente.*}");
        cliente_table();
        let failure = failure_of(
            "DO $$ BEGIN INSERT INTO cliente (nome) VALUES ('Rollback'); RAISE EXCEPTION 'abort'; END $$",
        );
        assert!(failure.is_some());
        assert_eq!(count("SELECT count(*) FROM webhook_delivery"), 0);
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

    #[pg_test]
    fn worker_status_reports_the_preloaded_worker() {
        // The test database has the extension: with webhook.databases = '*' (the default) the
        // launcher starts a worker in it as soon as CREATE EXTENSION commits.
        assert_eq!(
            text("SELECT database FROM webhook_worker_status()"),
            text("SELECT current_database()::text")
        );
        let message = text("SELECT message FROM webhook_worker_status()");
        assert!(
            message.starts_with("worker running") || message.contains("is starting"),
            "{message}"
        );
    }

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
        ];
        for (sql, sqlstate, names) in refusals {
            assert_refused(sql, sqlstate, names);
        }
        run(&format!("SELECT webhook_update({id}, active => false)"));
        assert_refused(
            &format!("SELECT webhook_replay({id}, now() - interval '1 day')"),
            "55000",
            "inactive",
        );
    }
}
