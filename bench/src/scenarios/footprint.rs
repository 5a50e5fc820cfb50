//! Scenario 6, footprint: the worker's memory and the tables' sizes.

use super::*;

impl Bench {
    pub(super) fn footprint(&mut self, sec: &mut Section) -> Result<()> {
        sec.setup = "Worker memory: VmRSS of the `webhook_ext worker` backend (pid from \
            pg_stat_activity), sampled every 100 ms during each drain of scenarios 1 and 5; the \
            maximum is reported, split into private memory (RssAnon), mapped files (RssFile: the \
            postgres binary, libraries) and shared memory (RssShmem: the pages of shared_buffers it \
            touched, which every backend counts in its RSS and whose size is set by shared_buffers). \
            The 48 MB target is judged without the shared memory. Tables: `pg_table_size` + `pg_indexes_size` of `webhook_delivery_store` and \
            `webhook_attempt` after scenario 1's first batch; retention: `webhook.retention` set \
            to 1s and reloaded, rows counted while the worker purges (from its first batch); then the rest purged with \
            the worker's own statement (`sql/worker/purge.sql`, retention 0) and VACUUM."
            .into();
        // The target is judged on the worker's own memory: VmRSS also counts every page of
        // shared_buffers the worker touched (RssShmem), which every backend counts the same way
        // and which is sized by shared_buffers, not by the worker.
        let own = |r: &Rss| r.anon + r.file;
        let worst = self
            .rss_seen
            .iter()
            .max_by_key(|(_, r)| own(r))
            .cloned()
            .ok_or("no RSS sample (scenarios 1 and 5 did not run)")?;
        let largest_vmrss = self
            .rss_seen
            .iter()
            .max_by_key(|(_, r)| r.total)
            .cloned()
            .ok_or("no RSS sample")?;
        let (label, r) = worst;
        sec.rows.push(
            Row::info(
                "worker RSS under load, max, without shared memory (RssAnon + RssFile)",
                format!(
                    "{} (private {}, files {}) in {label}",
                    mib(own(&r) as f64),
                    mib(r.anon as f64),
                    mib(r.file as f64)
                ),
            )
            .target("≤ 48 MB", own(&r) as f64 <= 48.0 * 1e6),
        );
        let (label, r) = largest_vmrss;
        sec.rows.push(Row::info(
            "worker VmRSS under load, max (with the shared buffers it touched)",
            format!(
                "{} (shared memory {}) in {label}",
                mib(r.total as f64),
                mib(r.shmem as f64)
            ),
        ));
        for (label, r) in &self.rss_seen {
            sec.rows.push(Row::info(
                format!("VmRSS max: {label}"),
                format!(
                    "{} (private {}, files {}, shared memory {})",
                    mib(r.total as f64),
                    mib(r.anon as f64),
                    mib(r.file as f64),
                    mib(r.shmem as f64)
                ),
            ));
        }
        sec.rows.extend(self.footprint.iter().cloned());
        sec.notes.extend(self.footprint_notes.iter().cloned());
        Ok(())
    }
}
