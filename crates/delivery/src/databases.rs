//! Which databases the launcher serves (`webhook.databases`), and each served database's share
//! of `webhook.concurrency`.

/// The databases `webhook.databases` (or an explicit `webhook.database`) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// `'*'`: every database in which the extension is installed.
    All,
    /// A comma list: only these (each still needs the extension installed).
    Listed(Vec<String>),
}

impl Served {
    /// `'*'` or a comma-separated list of database names (spaces around names are ignored;
    /// a name is taken as written, case included, like `pg_database.datname`).
    pub fn parse(value: &str) -> Result<Served, String> {
        let value = value.trim();
        if value == "*" {
            return Ok(Served::All);
        }
        if value.is_empty() {
            return Err("empty: use '*' for every database with webhook_ext, or a comma list of database names".into());
        }
        let mut names = Vec::new();
        for name in value.split(',').map(str::trim) {
            if name.is_empty() {
                return Err(format!("\"{value}\" has an empty database name"));
            }
            if name == "*" {
                return Err("'*' cannot be combined with database names".into());
            }
            if name.len() >= 64 {
                return Err(format!("database name \"{name}\" is longer than 63 bytes"));
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
        Ok(Served::Listed(names))
    }

    pub fn includes(&self, database: &str) -> bool {
        match self {
            Served::All => true,
            Served::Listed(names) => names.iter().any(|n| n == database),
        }
    }
}

/// The HTTP requests one database's worker may have in flight: an equal share of the
/// cluster-wide `webhook.concurrency` among the databases served, at least one each.
///
/// A fixed equal share is what keeps a busy database from starving a quiet one: the quiet
/// one's share is always free for it, whatever the busy one queues. Its price is that a lone
/// busy database does not borrow the idle ones' shares.
pub fn share(concurrency: usize, databases: usize) -> usize {
    (concurrency.max(1) / databases.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_serves_every_database() {
        assert_eq!(Served::parse(" * ").unwrap(), Served::All);
        assert!(Served::All.includes("anything"));
    }

    #[test]
    fn a_list_serves_its_names_only() {
        let served = Served::parse("crm, billing,crm").unwrap();
        assert_eq!(
            served,
            Served::Listed(vec!["crm".to_string(), "billing".to_string()])
        );
        assert!(served.includes("billing"));
        assert!(!served.includes("Billing"));
        assert!(!served.includes("postgres"));
    }

    #[test]
    fn bad_lists_are_refused_with_a_reason() {
        assert!(Served::parse("").unwrap_err().contains("empty"));
        assert!(Served::parse("crm,,billing")
            .unwrap_err()
            .contains("empty database name"));
        assert!(Served::parse("crm,*").unwrap_err().contains("'*'"));
        assert!(Served::parse(&"x".repeat(64))
            .unwrap_err()
            .contains("63 bytes"));
    }

    #[test]
    fn concurrency_is_shared_equally_and_never_below_one() {
        assert_eq!(share(32, 1), 32);
        assert_eq!(share(32, 4), 8);
        assert_eq!(share(32, 3), 10);
        assert_eq!(share(32, 0), 32);
        assert_eq!(share(4, 10), 1);
    }
}
