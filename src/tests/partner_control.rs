//! `#[pg_test]`s of per-partner control (SPEC §9): the webhook columns and their checks, the
//! event key, filters, columns chosen at the source, cancelling and operational events. What
//! the worker does with them (order, pace, retry rules) is tested in tests/partner_control.rs.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::{assert_refused, count, failure_of, one, run, text};

    fn webhook(extra: &str) -> i64 {
        one::<i64>(&format!(
            "SELECT id FROM webhook_create('https://example.com/h', 's3cret', '{{*}}'{extra})"
        ))
        .unwrap()
    }

    #[pg_test]
    fn the_controls_are_columns_with_defaults_set_by_create_and_update() {
        let id = webhook("");
        assert_eq!(
            text(&format!(
                "SELECT concat_ws('|', ordered, filter, max_per_second, no_retry_statuses) \
                   FROM webhook WHERE id = {id}"
            )),
            "f"
        );
        let id = webhook(
            ", ordered => true, filter => '{\"tenant_id\": 7}', max_per_second => 5, \
             no_retry_statuses => '{401,422}'",
        );
        assert_eq!(
            text(&format!(
                "SELECT concat_ws('|', ordered, filter, max_per_second, no_retry_statuses) \
                   FROM webhook WHERE id = {id}"
            )),
            r#"t|{"tenant_id": 7}|5|{401,422}"#
        );
        run(&format!(
            "SELECT webhook_update({id}, ordered => false, max_per_second => 0.5, \
                                   filter => '{{\"tenant_id\": 8}}')"
        ));
        assert_eq!(
            text(&format!(
                "SELECT concat_ws('|', ordered, filter, max_per_second, no_retry_statuses) \
                   FROM webhook WHERE id = {id}"
            )),
            r#"f|{"tenant_id": 8}|0.5|{401,422}"#
        );
    }

    #[pg_test]
    fn bad_controls_are_refused_alike_by_the_functions_and_plain_sql() {
        let id = webhook("");
        for (argument, field) in [
            ("filter => '[1]'", "filter"),
            ("filter => '7'", "filter"),
            ("max_per_second => 0", "max_per_second"),
            ("max_per_second => -1", "max_per_second"),
            ("max_per_second => 'NaN'", "max_per_second"),
            ("no_retry_statuses => '{200}'", "no_retry_statuses"),
            ("no_retry_statuses => '{401,600}'", "no_retry_statuses"),
            ("no_retry_statuses => '{401,NULL}'", "no_retry_statuses"),
        ] {
            assert_refused(
                &format!("SELECT webhook_create('https://example.com/x', 's3cret', {argument})"),
                "22023",
                field,
            );
            assert_refused(
                &format!("SELECT webhook_update({id}, {argument})"),
                "22023",
                field,
            );
            let (column, value) = argument.split_once(" => ").unwrap();
            assert_refused(
                &format!("UPDATE webhook SET {column} = {value} WHERE id = {id}"),
                "22023",
                field,
            );
            assert_refused(
                &format!(
                    "INSERT INTO webhook (url, secret, {column}) VALUES ('https://example.com/y', 's3cret', {value})"
                ),
                "22023",
                field,
            );
        }
        assert_refused(
            &format!("UPDATE webhook SET ordered = NULL WHERE id = {id}"),
            "22023",
            "ordered",
        );
        // Nothing half-written.
        assert_eq!(count("SELECT count(*) FROM webhook"), 1);
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM webhook WHERE id = {id} AND filter IS NULL \
                    AND max_per_second IS NULL AND no_retry_statuses IS NULL"
            )),
            1
        );
    }

    #[pg_test]
    fn emit_takes_a_key_and_the_trigger_sets_the_primary_key() {
        webhook("");
        run("SELECT webhook_emit('pedido.pago', '{\"id\": 5}', key => 'pedido-5')");
        run("SELECT webhook_emit('pedido.pago', '{\"id\": 6}')");
        assert_eq!(
            text("SELECT string_agg(coalesce(event_key, 'NULL'), ',' ORDER BY id) FROM webhook_delivery"),
            "pedido-5,NULL"
        );
        run(r#"
            CREATE TABLE one_key (id bigint PRIMARY KEY, v text);
            CREATE TABLE two_keys (tenant int, code text, v text, PRIMARY KEY (code, tenant));
            CREATE TABLE no_key (v text);
            CREATE TRIGGER w AFTER INSERT OR UPDATE ON one_key FOR EACH ROW EXECUTE FUNCTION webhook_trigger('one');
            CREATE TRIGGER w AFTER INSERT ON two_keys FOR EACH ROW EXECUTE FUNCTION webhook_trigger('two');
            CREATE TRIGGER w AFTER INSERT ON no_key FOR EACH ROW EXECUTE FUNCTION webhook_trigger('none');
            INSERT INTO one_key VALUES (42, 'a');
            UPDATE one_key SET v = 'b';
            INSERT INTO two_keys VALUES (7, 'x"y', 'a');
            INSERT INTO no_key VALUES ('a');
        "#);
        assert_eq!(
            text(
                "SELECT string_agg(event || '=' || coalesce(event_key, 'NULL'), ' ' ORDER BY id) \
                   FROM webhook_delivery WHERE event NOT LIKE 'pedido.%'"
            ),
            r#"one.created=42 one.updated=42 two.created=["x\"y",7] none.created=NULL"#
        );
        // A primary key added later is seen (the relcache invalidates what the trigger keeps).
        run("ALTER TABLE no_key ADD PRIMARY KEY (v); INSERT INTO no_key VALUES ('b')");
        assert_eq!(
            text("SELECT event_key FROM webhook_delivery ORDER BY id DESC LIMIT 1"),
            "b"
        );
    }

    #[pg_test]
    fn filters_choose_events_by_their_data_in_emit_and_in_the_trigger() {
        let seven = webhook(", filter => '{\"tenant_id\": 7}'");
        let eight = webhook(", filter => '{\"tenant_id\": 8, \"ativo\": true}'");
        let all = webhook("");
        assert_eq!(
            one::<i32>("SELECT webhook_emit('x.y', '{\"tenant_id\": 7, \"n\": 1}')"),
            Some(2)
        );
        assert_eq!(
            one::<i32>("SELECT webhook_emit('x.y', '{\"tenant_id\": 8, \"ativo\": false}')"),
            Some(1)
        );
        run(r#"
            CREATE TABLE conta (id serial PRIMARY KEY, tenant_id int, ativo boolean);
            CREATE TRIGGER w AFTER INSERT OR UPDATE ON conta FOR EACH ROW EXECUTE FUNCTION webhook_trigger('conta');
            INSERT INTO conta (tenant_id, ativo) VALUES (7, true), (8, true), (9, true);
            UPDATE conta SET ativo = false WHERE tenant_id = 8;
        "#);
        let got = |webhook: i64| {
            text(&format!(
                "SELECT coalesce(string_agg(event || ':' || (body::jsonb -> 'data' ->> 'tenant_id'), ' ' ORDER BY id), '') \
                   FROM webhook_delivery WHERE webhook_id = {webhook}"
            ))
        };
        assert_eq!(got(seven), "x.y:7 conta.created:7");
        assert_eq!(got(eight), "conta.created:8");
        assert_eq!(
            got(all),
            "x.y:7 x.y:8 conta.created:7 conta.created:8 conta.created:9 conta.updated:8"
        );
    }

    #[pg_test]
    fn the_trigger_sends_only_the_chosen_columns() {
        webhook("");
        run(r#"
            CREATE TABLE cliente (id serial PRIMARY KEY, tenant_id int, nome text, cpf text, senha_hash text);
            CREATE TRIGGER w AFTER INSERT OR UPDATE OR DELETE ON cliente FOR EACH ROW
                EXECUTE FUNCTION webhook_trigger('cliente', 'exclude=cpf, senha_hash');
            CREATE TABLE tarefa (id serial PRIMARY KEY, titulo text, segredo text);
            CREATE TRIGGER w AFTER INSERT OR UPDATE ON tarefa FOR EACH ROW
                EXECUTE FUNCTION webhook_trigger('tarefa.criada', 'tarefa.alterada', 'tarefa.removida', 'columns=titulo');
            INSERT INTO cliente (tenant_id, nome, cpf, senha_hash) VALUES (7, 'Ana', '123', 'x');
            UPDATE cliente SET cpf = '456', senha_hash = 'y';
            UPDATE cliente SET nome = 'Ana Maria', cpf = '789';
            DELETE FROM cliente;
            INSERT INTO tarefa (titulo, segredo) VALUES ('a', 's');
            UPDATE tarefa SET segredo = 't';
            UPDATE tarefa SET titulo = 'b';
        "#);
        let bodies = text(
            "SELECT string_agg(event || ' ' || (body::jsonb -> 'data')::text, E'\\n' ORDER BY id) FROM webhook_delivery",
        );
        assert_eq!(
            bodies,
            [
                r#"cliente.created {"id": 1, "nome": "Ana", "tenant_id": 7}"#,
                r#"cliente.updated {"id": 1, "nome": "Ana Maria", "tenant_id": 7, "alteracoes": {"nome": {"novo": "Ana Maria", "anterior": "Ana"}}}"#,
                r#"cliente.deleted {"id": 1, "nome": "Ana Maria", "tenant_id": 7}"#,
                r#"tarefa.criada {"titulo": "a"}"#,
                r#"tarefa.alterada {"titulo": "b", "alteracoes": {"titulo": {"novo": "b", "anterior": "a"}}}"#,
            ]
            .join("\n")
        );
        // The key comes from the primary key even when it is not sent.
        assert_eq!(
            text("SELECT string_agg(event_key, ',' ORDER BY id) FROM webhook_delivery WHERE event LIKE 'tarefa.%'"),
            "1,1"
        );
        assert_eq!(count("SELECT count(*) FROM webhook_delivery WHERE body LIKE '%cpf%' OR body LIKE '%senha%' OR body LIKE '%segredo%'"), 0);
    }

    #[pg_test]
    fn an_unknown_column_is_refused_when_the_trigger_fires_and_by_the_check_function() {
        webhook("");
        run(r#"
            CREATE TABLE cliente (id serial PRIMARY KEY, nome text, cpf text);
            CREATE TRIGGER w AFTER INSERT ON cliente FOR EACH ROW
                EXECUTE FUNCTION webhook_trigger('cliente', 'exclude=cpf,senha');
        "#);
        assert_refused(
            "INSERT INTO cliente (nome, cpf) VALUES ('Ana', '123')",
            "22023",
            "exclude",
        );
        let failure = failure_of("INSERT INTO cliente (nome, cpf) VALUES ('Ana', '123')").unwrap();
        assert!(failure.contains("\"senha\""), "{failure}");
        assert!(!failure.contains("123"), "row data in the error: {failure}");
        assert_eq!(count("SELECT count(*) FROM cliente"), 0);
        assert_eq!(
            one::<bool>("SELECT webhook_trigger_check('cliente', 'exclude=cpf')"),
            Some(true)
        );
        assert_refused(
            "SELECT webhook_trigger_check('cliente', 'columns=id,senha')",
            "22023",
            "columns",
        );
        assert_refused(
            "SELECT webhook_trigger_check('cliente', 'nome')",
            "22023",
            "columns",
        );
    }

    #[pg_test]
    fn cancel_takes_a_pending_delivery_and_refuses_the_others() {
        let id = webhook("");
        run("SELECT webhook_emit('a.b', '{}'), webhook_emit('a.b', '{}'), webhook_emit('a.b', '{}')");
        // Other tests take ids from the same sequence meanwhile: not consecutive.
        let first = count("SELECT min(id) FROM webhook_delivery");
        let second = count(&format!(
            "SELECT min(id) FROM webhook_delivery WHERE id > {first}"
        ));
        assert_eq!(
            text(&format!(
                "SELECT status || ' ' || error FROM webhook_cancel({first})"
            )),
            "cancelled cancelled by webhook_cancel()"
        );
        assert_refused(
            &format!("SELECT webhook_cancel({first})"),
            "55000",
            "cancelled",
        );
        assert_refused("SELECT webhook_cancel(-1)", "P0002", "-1");
        run(&format!(
            "UPDATE webhook_delivery_store SET status = 'succeeded' WHERE id = {second}"
        ));
        assert_refused(
            &format!("SELECT webhook_cancel({second})"),
            "55000",
            "succeeded",
        );
        // The window: nothing before since; everything up to now.
        assert_eq!(
            one::<i32>(&format!(
                "SELECT webhook_cancel_pending({id}, since => now() + interval '1 hour', until => now() + interval '2 hours')"
            )),
            Some(0)
        );
        assert_eq!(
            one::<i32>(&format!(
                "SELECT webhook_cancel_pending({id}, until => now() + interval '1 second')"
            )),
            Some(1)
        );
        assert_eq!(
            text("SELECT string_agg(status, ',' ORDER BY id) FROM webhook_delivery"),
            "cancelled,succeeded,cancelled"
        );
        assert_refused("SELECT webhook_cancel_pending(-1)", "P0002", "-1");
        assert_refused(
            &format!("SELECT webhook_cancel_pending({id}, since => now(), until => now() - interval '1 day')"),
            "22023",
            "since",
        );
    }

    #[pg_test]
    fn cancelling_an_ordered_delivery_releases_the_next_with_its_key() {
        let id = webhook(", ordered => true");
        run("SELECT webhook_emit('a.b', '{}', key => 'k'), webhook_emit('a.b', '{}', key => 'k')");
        let first = count("SELECT min(id) FROM webhook_delivery");
        let second = count("SELECT max(id) FROM webhook_delivery");
        // As the worker leaves them: the first waiting for a retry, the second behind it.
        run(&format!(
            "INSERT INTO webhook_delivery_due (delivery_id, webhook_id, due_at, event_key) VALUES \
               ({first}, {id}, now() + interval '1 hour', 'k'), \
               ({second}, {id}, '9999-12-31 00:00:00+00', 'k')"
        ));
        run(&format!("SELECT webhook_cancel({first})"));
        assert_eq!(
            count("SELECT count(*) FROM webhook_delivery_due WHERE due_at <= now()"),
            1
        );
        // No longer ordered: nothing is held back.
        run(&format!(
            "UPDATE webhook_delivery_due SET due_at = '9999-12-31 00:00:00+00' WHERE delivery_id = {second}"
        ));
        run(&format!(
            "UPDATE webhook SET ordered = false WHERE id = {id}"
        ));
        assert_eq!(
            count("SELECT count(*) FROM webhook_delivery_due WHERE due_at <= now() AND event_key IS NULL"),
            1
        );
    }

    #[pg_test]
    fn disabling_queues_an_operational_event_for_webhooks_that_name_its_prefix() {
        let watched = webhook("");
        let operations = one::<i64>(
            "SELECT id FROM webhook_create('https://example.com/ops', 's3cret', '{webhook_ext.*}')",
        )
        .unwrap();
        let named = one::<i64>(
            "SELECT id FROM webhook_create('https://example.com/ops2', 's3cret', '{*,webhook_ext.delivery.failed}')",
        )
        .unwrap();
        let everything = webhook("");
        run(&format!(
            "UPDATE webhook SET active = false, disabled_reason = 'endpoint answered 410 Gone' WHERE id = {watched}"
        ));
        let body: serde_json::Value = serde_json::from_str(&text(&format!(
            "SELECT body FROM webhook_delivery WHERE webhook_id = {operations}"
        )))
        .unwrap();
        assert_eq!(body["event"], "webhook_ext.webhook.disabled");
        assert_eq!(
            body["data"],
            serde_json::json!({"type": "webhook.disabled", "webhook_id": watched,
                                "reason": "endpoint answered 410 Gone"})
        );
        // '*' does not match operational events; a webhook_ext. pattern must name them.
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM webhook_delivery WHERE webhook_id IN ({named}, {everything})"
            )),
            0
        );
        // Switched off by hand (no reason): nothing.
        run(&format!(
            "SELECT webhook_update({everything}, active => false)"
        ));
        assert_eq!(count("SELECT count(*) FROM webhook_delivery"), 1);
    }
}
