//! The worker's own SQL, built into the bench from the same files the worker builds in:
//! the statements of `sql/worker/*.sql` (src/store.rs includes them with `include_str!` too)
//! and the session settings the worker pins (`(c"name", c"value")` pairs of src/worker.rs).
//! What scenario 4 times without the worker is therefore what the worker runs, and a change
//! to either file changes the bench at its next build.

/// A statement of sql/worker/, as the worker's `worker_sql!` names it.
macro_rules! worker_sql {
    ($name:literal) => {
        include_str!(concat!("../../sql/worker/", $name, ".sql"))
    };
}

/// src/worker.rs, read for its session settings.
const WORKER_RS: &str = include_str!("../../src/worker.rs");

/// The worker's statements for one installation of the extension.
pub struct WorkerSql {
    /// $1 the walk's cursor (last id seen), $2 how many rows at most.
    pub walk: String,
    /// $1 how many rows at most, $2 / $3 the known webhooks and their reads, $4 the room of
    /// the others.
    pub due: String,
    /// Seconds until the earliest due row of an active webhook is due.
    pub next_due: String,
    /// $1 first id to look at, $2 how many rows, $3 webhook.retention in seconds.
    pub purge: String,
    /// The settings the worker makes for its session, so that a statement timed without it
    /// is planned the same way.
    pub session_settings: Vec<(String, String)>,
}

impl WorkerSql {
    /// The statements for the extension in `quoted_schema`, already quoted as an identifier
    /// (the server's `quote_ident`, which is the `quote_identifier` src/store.rs uses).
    pub fn new(quoted_schema: &str) -> WorkerSql {
        let s = |sql: &str| in_schema(sql, quoted_schema);
        WorkerSql {
            walk: s(worker_sql!("walk")),
            due: s(worker_sql!("due")),
            next_due: s(worker_sql!("next_due")),
            purge: s(worker_sql!("purge")),
            session_settings: session_settings(WORKER_RS),
        }
    }

    /// `SELECT set_config(...)` for each of the worker's session settings this server has (a
    /// setting it lacks, such as transaction_timeout before 17, the worker does not set there
    /// either).
    pub fn session_settings_sql(&self) -> String {
        self.session_settings
            .iter()
            .map(|(name, value)| {
                format!(
                    "SELECT set_config(name, {}, false) FROM pg_settings WHERE name = {};\n",
                    literal(value),
                    literal(name)
                )
            })
            .collect()
    }
}

/// What src/store.rs `in_schema` does: `@extschema@` replaced by the quoted schema.
pub fn in_schema(sql: &str, quoted_schema: &str) -> String {
    sql.replace("@extschema@", quoted_schema)
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Every `(c"name", c"value")` pair of the worker's source.
fn session_settings(worker: &str) -> Vec<(String, String)> {
    let mut settings = Vec::new();
    let mut rest = worker;
    while let Some(at) = rest.find("(c\"") {
        rest = &rest[at + 3..];
        let Some((name, after)) = rest.split_once('"') else {
            break;
        };
        let Some(value) = after.strip_prefix(", c\"").and_then(|v| v.split_once('"')) else {
            continue;
        };
        if value.1.starts_with(')') {
            settings.push((name.to_string(), value.0.to_string()));
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_worker_statements() {
        let sql = WorkerSql::new("public");
        for (name, text) in [
            ("walk", &sql.walk),
            ("due", &sql.due),
            ("next_due", &sql.next_due),
            ("purge", &sql.purge),
        ] {
            assert!(!text.contains("@extschema@"), "{name}: {text}");
            assert!(!text.trim().is_empty(), "{name}");
        }
        assert!(sql.walk.contains("public.webhook_delivery_store"));
        assert!(sql.walk.contains("$1::bigint") && sql.walk.contains("$2::bigint"));
        assert!(sql.due.contains("public.webhook_delivery_due"));
        assert!(sql.due.contains("$4::int"));
        assert!(sql.purge.contains("$3::float8"));
        assert!(sql.next_due.contains("min("));
    }

    #[test]
    fn a_quoted_schema_is_used_as_given() {
        let sql = WorkerSql::new("\"My Schema\"");
        assert!(sql.walk.contains("\"My Schema\".webhook_delivery_store"));
    }

    #[test]
    fn reads_the_worker_session_settings() {
        let sql = WorkerSql::new("public");
        let get = |name: &str| {
            sql.session_settings
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("search_path"), Some("pg_catalog, pg_temp"));
        assert_eq!(get("enable_seqscan"), Some("off"));
        assert_eq!(get("enable_nestloop"), Some("off"));
        assert_eq!(get("plan_cache_mode"), Some("force_generic_plan"));
        assert!(sql
            .session_settings_sql()
            .contains("SELECT set_config(name, 'pg_catalog, pg_temp', false) FROM pg_settings WHERE name = 'search_path';"));
    }

    #[test]
    fn settings_parser() {
        let src = r#"vec![(c"a", c"1"), (c"b", c"x, y")]; call(c"not", 3); (c"c", c"2")"#;
        assert_eq!(
            session_settings(src),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "x, y".to_string()),
                ("c".to_string(), "2".to_string())
            ]
        );
    }
}
