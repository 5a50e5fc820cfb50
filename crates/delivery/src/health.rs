//! Endpoint health: how a batch of finished deliveries moves each webhook's streak of
//! consecutive failed deliveries (which disables it at `webhook.disable_after_failures`).

/// What one batch did to one webhook, in the order the outcomes finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthDelta {
    pub webhook_id: i64,
    /// Some delivery succeeded: the streak restarts from `failures`.
    pub succeeded: bool,
    /// Some delivery failed for good.
    pub failed: bool,
    /// Failed deliveries after the batch's last success (or in the whole batch if none).
    pub failures: i32,
}

/// `outcomes`: (webhook id, final state) in completion order, where the state is the
/// delivery's status after the attempt (`succeeded`, `failed`, or `pending` for a retry to
/// come, which does not count). Webhooks appear in the order first seen.
pub fn deltas<'a>(outcomes: impl IntoIterator<Item = (i64, &'a str)>) -> Vec<HealthDelta> {
    let mut deltas: Vec<HealthDelta> = Vec::new();
    for (webhook_id, status) in outcomes {
        let index = match deltas.iter().position(|d| d.webhook_id == webhook_id) {
            Some(index) => index,
            None => {
                deltas.push(HealthDelta {
                    webhook_id,
                    succeeded: false,
                    failed: false,
                    failures: 0,
                });
                deltas.len() - 1
            }
        };
        let delta = &mut deltas[index];
        match status {
            "succeeded" => {
                delta.succeeded = true;
                delta.failures = 0;
            }
            "failed" => {
                delta.failed = true;
                delta.failures += 1;
            }
            _ => {}
        }
    }
    deltas.retain(|d| d.succeeded || d.failed);
    deltas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_after_the_last_success_count() {
        let d = deltas([
            (1, "failed"),
            (1, "succeeded"),
            (1, "failed"),
            (1, "failed"),
        ]);
        assert_eq!(
            d,
            vec![HealthDelta {
                webhook_id: 1,
                succeeded: true,
                failed: true,
                failures: 2
            }]
        );
    }

    #[test]
    fn a_batch_of_failures_only_adds_to_the_streak() {
        let d = deltas([(7, "failed"), (8, "succeeded"), (7, "failed")]);
        assert_eq!(
            d,
            vec![
                HealthDelta {
                    webhook_id: 7,
                    succeeded: false,
                    failed: true,
                    failures: 2
                },
                HealthDelta {
                    webhook_id: 8,
                    succeeded: true,
                    failed: false,
                    failures: 0
                },
            ]
        );
    }

    #[test]
    fn retries_still_to_come_do_not_count() {
        assert!(deltas([(3, "pending"), (3, "pending")]).is_empty());
    }
}
