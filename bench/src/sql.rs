//! The worker's own SQL, read from `src/store.rs` at run time, so that the claim timed in
//! scenario 4 without the worker is the claim the worker runs today.

use std::fs;
use std::path::Path;

pub struct WorkerSql {
    /// $1 limit, $2 webhook ids, $3 their rooms, $4 the room of the others, $5 lease ms.
    pub claim: String,
    pub next_due: String,
    /// The settings the worker makes for its session (`SetConfigOption(c"name", c"value")`
    /// pairs in src/worker.rs), so that the claim timed without it is planned the same way.
    pub session_settings: Vec<(String, String)>,
    /// The claim's RETURNING list was replaced by `d.id` (it is built by code).
    pub returning_reduced: bool,
}

/// None when src/store.rs cannot be parsed (the bench then measures the worker only
/// through pg_stat_statements).
pub fn worker_sql(repo: &Path, schema: &str) -> Option<WorkerSql> {
    let text = fs::read_to_string(repo.join("src/store.rs")).ok()?;
    let returning = const_literal(&text, "const CLAIM_RETURNING: &str = ");
    let fill = |s: &str| {
        let mut s = s.replace("{s}", schema);
        if let Some(r) = &returning {
            s = s.replace("{CLAIM_RETURNING}", r);
        }
        s.replace("{{", "{").replace("}}", "}")
    };
    let mut claim = fill(&field_literal(&text, "claim:")?);
    // A RETURNING list built by code (`RETURNING {}`) cannot be read here: the claim is then
    // timed returning the ids only (the list is a projection of the claimed rows).
    let mut returning_reduced = false;
    if claim.contains('{') {
        let at = claim.rfind("RETURNING")?;
        claim = format!("{}RETURNING d.id", &claim[..at]);
        returning_reduced = true;
    }
    let next_due = fill(&field_literal(&text, "next_due:")?);
    if next_due.contains('{') {
        return None;
    }
    let worker = fs::read_to_string(repo.join("src/worker.rs")).unwrap_or_default();
    Some(WorkerSql {
        session_settings: session_settings(&worker),
        claim,
        next_due,
        returning_reduced,
    })
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

/// The string literal of the first `format!(` in the struct field `name` (a line that
/// starts with `name:` and opens a call), whatever wraps it (`format!(...)`, `Prepared::new(.., format!(...))`).
fn field_literal(text: &str, name: &str) -> Option<String> {
    let mut offset = 0;
    let field = text.lines().find_map(|line| {
        let at = offset;
        offset += line.len() + 1;
        let line = line.trim_start();
        (line.starts_with(name) && line.contains('(')).then_some(at)
    })?;
    let start = field + text[field..].find("format!(")? + "format!(".len();
    let (lit, _) = string_literal(&text[start..])?;
    Some(lit)
}

fn const_literal(text: &str, marker: &str) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    let (lit, _) = string_literal(&text[start..])?;
    Some(lit)
}

/// Parses one Rust string literal at the start of `s` (after whitespace): handles `\`
/// line continuations and the usual escapes. Returns its value and the rest of the input.
fn string_literal(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let mut chars = s.strip_prefix('"')?.char_indices().peekable();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 2..])),
            '\\' => match chars.next()?.1 {
                '\n' => {
                    while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                        chars.next();
                    }
                }
                'n' => out.push('\n'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                '\'' => out.push('\''),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_worker_statements() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sql = worker_sql(&repo, "public").expect("src/store.rs parses");
        assert!(sql.claim.contains("FOR UPDATE SKIP LOCKED"));
        assert!(sql.claim.contains("RETURNING d.id"));
        assert!(!sql.claim.contains('{'), "{}", sql.claim);
        assert!(sql.next_due.contains("min("));
    }

    #[test]
    fn literal_with_continuations() {
        let (v, rest) = string_literal("  \"a \\\n     b \\\"c\\\"\"),").unwrap();
        assert_eq!(v, "a b \"c\"");
        assert_eq!(rest, "),");
    }
}
