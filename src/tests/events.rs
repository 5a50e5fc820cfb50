//! `#[pg_test]`s: Events: webhook_emit, its envelope and timestamp, and what a rollback leaves.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

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
}
