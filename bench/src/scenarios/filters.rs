//! Scenario 8 (issue 14): what filters per subscription cost at enqueue. The INSERT rate of a
//! multi-tenant table with 100 webhooks each filtering on a different tenant (one matches each
//! row) against one webhook without a filter (it gets every row): the same one delivery per
//! INSERT, so the difference is matching 100 filters.

use std::path::PathBuf;

use super::Bench;
use crate::report::{Row, Section};
use crate::util::{log, median, pct, pg, thousands, Result};

const TENANTS: i64 = 100;

const CONTA_DDL: &str = "CREATE TABLE IF NOT EXISTS conta (
    id bigserial PRIMARY KEY,
    tenant_id int NOT NULL,
    nome text NOT NULL,
    email text,
    criado_em timestamptz NOT NULL DEFAULT now());
    DROP TRIGGER IF EXISTS conta_webhook ON conta;
    CREATE TRIGGER conta_webhook AFTER INSERT OR UPDATE OR DELETE ON conta
        FOR EACH ROW EXECUTE FUNCTION webhook_trigger('conta')";

impl Bench {
    pub(super) fn filters(&mut self, sec: &mut Section) -> Result<()> {
        let secs = self.sizes.s3_secs;
        let clients = self.sizes.s3_clients;
        sec.setup = format!(
            "`pgbench -n -c {clients} -j 2 -T {secs}` running a one-row INSERT into `conta` \
             (tenant_id random in 1..{TENANTS}) with `webhook_trigger('conta')`. One webhook on \
             `conta.*` without a filter, vs {TENANTS} webhooks on `conta.*` each with \
             `filter => '{{\"tenant_id\": n}}'`: one delivery per INSERT either way. Runs \
             alternate (median of two each); the queue is drained and `conta` truncated before \
             each. Diagnostic row: {TENANTS} webhooks of which one is subscribed, none \
             with a filter (what matching {TENANTS} webhooks costs without filters)."
        );
        self.reset_queue()?;
        let mut db = self.db()?;
        db.batch_execute(CONTA_DDL).map_err(pg)?;
        let script = self.conta_script()?;
        let url = self.recv.url("/conta");
        // `filtered`: 100 filtering webhooks; else one webhook, plus (`others`) 99 without a
        // filter subscribed to an event nobody emits (matching 100 webhooks, no filter).
        let set_webhooks = |b: &Bench, filtered: bool, others: bool| -> Result<()> {
            b.reset_queue()?;
            let mut db = b.db()?;
            if others {
                db.execute(
                    "SELECT count(webhook_create($1, $2, '{nobody.*}'))
                       FROM generate_series(2, $3::bigint)",
                    &[&url, &super::SECRET, &TENANTS],
                )
                .map_err(pg)?;
            }
            if filtered {
                db.execute(
                    "SELECT count(webhook_create($1, $2, '{conta.*}',
                                                 filter => jsonb_build_object('tenant_id', n)))
                       FROM generate_series(1, $3::bigint) AS n",
                    &[&url, &super::SECRET, &TENANTS],
                )
                .map_err(pg)?;
            } else {
                b.create_webhook(&mut db, &url, "{conta.*}")?;
            }
            db.batch_execute("TRUNCATE conta; CHECKPOINT;").map_err(pg)
        };
        let (mut one, mut hundred) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            set_webhooks(self, false, false)?;
            one.push(self.pgbench(&script, secs)?);
            log(format!(
                "S8: 1 webhook, no filter: {:.0} tps",
                one.last().unwrap()
            ));
            set_webhooks(self, true, false)?;
            hundred.push(self.pgbench(&script, secs)?);
            log(format!(
                "S8: {TENANTS} webhooks filtering on tenants: {:.0} tps",
                hundred.last().unwrap()
            ));
        }
        let delivered_each: bool = db
            .query_one(
                "SELECT count(*) FILTER (WHERE w.filter OPERATOR(pg_catalog.@>)
                                               jsonb_build_object('tenant_id', c.tenant_id))
                        = count(*)
                   FROM webhook_delivery_store AS d
                   JOIN webhook AS w ON w.id = d.webhook_id
                   JOIN conta AS c ON c.id = (d.body::jsonb -> 'data' ->> 'id')::bigint",
                &[],
            )
            .map_err(pg)?
            .get(0);
        // Diagnostic: 100 webhooks to match, none filtering (the filter's own share).
        set_webhooks(self, false, true)?;
        let unfiltered = self.pgbench(&script, secs)?;
        log(format!(
            "S8: {TENANTS} webhooks, one matching, no filter: {unfiltered:.0} tps"
        ));
        self.reset_queue()?;
        db.batch_execute("DROP TABLE conta").map_err(pg)?;
        let (o, h) = (median(&one), median(&hundred));
        sec.rows.push(Row::compared(
            format!("INSERT/s with {TENANTS} webhooks each filtering on one tenant"),
            thousands(h),
            format!("{} with 1 webhook, no filter", thousands(o)),
            pct(h, o),
        ));
        sec.rows.push(Row::compared(
            format!(
                "INSERT/s with {TENANTS} webhooks, one subscribed, none filtering (diagnostic)"
            ),
            thousands(unfiltered),
            format!("{} with {TENANTS} filtering", thousands(h)),
            pct(h, unfiltered),
        ));
        sec.notes.push(format!(
            "Every delivery of the filtered run went to the webhook of its row's tenant: {delivered_each}."
        ));
        sec.notes.push(
            "Issue 14 asks that the cost stay small with hundreds of webhooks and sets no figure: \
             the rows have no pass/fail mark; bench/ANALYSIS.md §11 reads them."
                .to_string(),
        );
        Ok(())
    }

    fn conta_script(&self) -> Result<PathBuf> {
        let script = self.run_dir.join("insert_conta.sql");
        std::fs::write(
            &script,
            format!(
                "\\set n random(1, 100000000)\n\
                 \\set tenant random(1, {TENANTS})\n\
                 INSERT INTO conta (tenant_id, nome, email) \
                 VALUES (:tenant, 'Conta ' || :n, 'conta' || :n || '@example.com');\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        Ok(script)
    }
}
