//! `#[pg_test]`s: What the worker reads and writes, run by hand: the walk, its plans, and its status.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::tests::*;

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
    fn every_reader_of_deliveries_reads_whether_their_webhook_is_ordered_with_them() {
        // The round decides what is ordered from these columns, not from what it loaded
        // before: a webhook made ordered after that is still ordered for the rows it finds.
        let ordered = create_webhook("https://example.com/ordered", "{ord.*}");
        let plain = create_webhook("https://example.com/plain", "{ord.*}");
        run(&format!(
            "UPDATE webhook SET ordered = true WHERE id = {ordered}"
        ));
        run("SELECT webhook_emit('ord.x', '{}', key => 'k1')");
        let state = |found: &[crate::store::Found]| -> Vec<(i64, Option<bool>, bool)> {
            let mut state: Vec<_> = found
                .iter()
                .map(|f| (f.webhook_id, f.webhook_active, f.webhook_ordered))
                .collect();
            state.sort_unstable();
            state
        };
        let expected = {
            let mut expected = vec![(ordered, Some(true), true), (plain, Some(true), false)];
            expected.sort_unstable();
            expected
        };
        Spi::connect_mut(|client| {
            let installation = crate::store::installation(client).unwrap().unwrap();
            let statements = crate::store::Statements::new(installation);
            let walked = statements.walk(client, 0, 10).unwrap();
            assert_eq!(state(&walked), expected);
            let first = walked.iter().map(|f| f.delivery_id).min().unwrap();
            let last = walked.iter().map(|f| f.delivery_id).max().unwrap();
            let rechecked = statements.recheck(client, &[(first, last)]).unwrap();
            assert_eq!(state(&rechecked), expected);
            let parked: Vec<(i64, i64)> = walked
                .iter()
                .map(|f| (f.delivery_id, f.webhook_id))
                .collect();
            statements.park(client, &parked).unwrap();
            let due = statements.due(client, 10, &[], 10).unwrap();
            assert_eq!(state(&due), expected);
        });
        run(&format!(
            "UPDATE webhook SET active = false WHERE id = {ordered}"
        ));
        Spi::connect_mut(|client| {
            let installation = crate::store::installation(client).unwrap().unwrap();
            let statements = crate::store::Statements::new(installation);
            let walked = statements.walk(client, 0, 10).unwrap();
            let inactive: Vec<_> = state(&walked)
                .into_iter()
                .filter(|(id, _, _)| *id == ordered)
                .collect();
            assert_eq!(inactive, [(ordered, Some(false), false)]);
        });
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
}
