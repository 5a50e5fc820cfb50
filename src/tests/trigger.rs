//! `#[pg_test]`s: webhook_trigger: the row data each operation sends, its event names, and its misuse.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

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
    fn trigger_body_is_the_one_webhook_envelope_builds_from_row_to_json_for_every_core_type() {
        // Rows without json columns are sent as row_to_json writes them, unparsed: the body
        // must be the one the parse gives (webhook_envelope parses its data).
        create_webhook("https://example.com/a", "{amplo.*}");
        run(r#"
            CREATE TABLE amplo (
                id bigint, codigo varchar(10), letra char(3), ref uuid, n smallint, i int,
                texto text, valor numeric, f8 float8, f4 real, ok boolean, dia date,
                quando timestamptz, hora time, intervalo interval, bytes bytea, rede inet,
                ponto point, faixa int4range, tags text[], grade int[][], datas date[],
                PRIMARY KEY (codigo, id));
            CREATE TRIGGER w AFTER INSERT OR DELETE ON amplo FOR EACH ROW EXECUTE FUNCTION webhook_trigger('amplo');
            INSERT INTO amplo VALUES
              (1, 'a"b\c', 'x', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', -3, 2147483647,
               E'São \"Jo\\s\u0001\t\n/\u007f🎉', 123456789012345678901234567890.000100, 1e100, 'NaN', true,
               '2024-02-29', '2024-01-01 10:00:00.123456+00', '23:59:59.5', '1 day 02:03:04',
               E'\\x00ff', '192.168.0.1/24', '(1.5,-2)', '[1,5)', '{vip,"São Paulo",NULL}',
               '{{1,2},{3,4}}', '{2024-01-01,infinity}'),
              (2, 'b', NULL, NULL, NULL, NULL, NULL, 'Infinity', '-Infinity', '-0', false,
               NULL, 'infinity', NULL, NULL, NULL, NULL, NULL, 'empty', '{}', NULL, NULL);
            CREATE TABLE amplo_copia AS SELECT * FROM amplo;
            DELETE FROM amplo WHERE id = 2;
        "#);
        assert_eq!(count("SELECT count(*) FROM webhook_delivery"), 3);
        assert_eq!(
            count(
                r#"SELECT count(*) FROM webhook_delivery AS d
                     JOIN amplo_copia AS c ON c.id = (d.body::jsonb->'data'->>'id')::bigint
                    WHERE d.body = webhook_envelope(
                            d.body::jsonb->>'id', d.body::jsonb->>'event',
                            extract(epoch FROM (d.body::jsonb->>'timestamp')::timestamptz)::bigint,
                            row_to_json(c)::text, NULL)"#
            ),
            3,
            "{}",
            text("SELECT string_agg(body, E'\\n' ORDER BY id) FROM webhook_delivery")
        );
        let deleted = text("SELECT body FROM webhook_delivery WHERE event = 'amplo.deleted'");
        assert!(
            deleted.contains(r#""valor":"Infinity","f8":"-Infinity","f4":-0,"ok":false"#),
            "{deleted}"
        );
        assert_eq!(
            text("SELECT string_agg(event_key, ' ' ORDER BY id) FROM webhook_delivery"),
            r#"["a\"b\\c",1] ["b",2] ["b",2]"#
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
}
