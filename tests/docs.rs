//! Every ```sql block of README.md and docs/*.md runs, in order, one fresh database per file,
//! against a real cluster with the worker preloaded and a live receiver standing in for
//! `http://127.0.0.1:9000` — so the documentation cannot drift from the code.

use std::path::{Path, PathBuf};

use webhook_ext_tests::*;

/// A ```sql block: where it starts (for messages) and its statements.
struct Block {
    line: usize,
    statements: Vec<String>,
}

fn sql_blocks(markdown: &str) -> Vec<Block> {
    fenced_blocks(markdown)
        .into_iter()
        .filter(|block| block.language == "sql")
        .map(|block| Block {
            line: block.line,
            statements: statements(&block.text),
        })
        .collect()
}

/// Statements end with `;` at the end of a line (outside comments). Each runs on its own, as
/// psql would run it: ALTER SYSTEM cannot share a transaction with anything.
fn statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        current.push_str(line);
        current.push('\n');
        let code = line.split("--").next().unwrap_or("").trim_end();
        if code.ends_with(';') {
            statements.push(std::mem::take(&mut current));
        }
    }
    if !current.trim().is_empty()
        && current
            .lines()
            .any(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
    {
        statements.push(current);
    }
    statements
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_sql_example_in_the_docs_runs() {
    // The examples show each step's effect in turn: no worker serves their databases (a
    // worker would race `webhook_retry` examples for the same delivery).
    let cluster = Cluster::start("docs", "webhook.databases = 'postgres'");
    let receiver = Receiver::always(Reply::ok());
    let local = receiver.url().trim_start_matches("http://").to_string();
    let mut admin = cluster.connect();
    let mut ran = 0;
    for (n, file) in documents().iter().enumerate() {
        let markdown = std::fs::read_to_string(file).unwrap();
        let blocks = sql_blocks(&markdown);
        if blocks.is_empty() {
            continue;
        }
        let database = format!("docs_{n}");
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .unwrap();
        let mut db = cluster.connect_to(&database);
        if !markdown.contains("CREATE EXTENSION webhook_ext") {
            db.batch_execute("CREATE EXTENSION webhook_ext").unwrap();
        }
        for block in &blocks {
            for statement in &block.statements {
                let sql = statement.replace("127.0.0.1:9000", &local);
                if let Err(e) = db.batch_execute(&sql) {
                    let log = cluster.server_log();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    panic!(
                        "{}:{}: this example fails: {}\n{statement}\nserver log:\n{}",
                        file.display(),
                        block.line,
                        db_message(&e),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                ran += 1;
            }
        }
    }
    eprintln!("ran {ran} SQL statements from the docs");
    assert!(
        ran > 50,
        "expected the docs to hold many examples, found {ran}"
    );
    assert!(
        receiver.count() > 0,
        "the examples that send (verify, ping, retry) reached the receiver"
    );
}

#[test]
fn the_block_parser_splits_statements_like_psql() {
    let blocks = sql_blocks(
        "text\n```sql\nSELECT 1; -- one\nSELECT\n  2;\n-- just a comment\n```\n```bash\nls\n```\n",
    );
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].line, 2);
    assert_eq!(
        blocks[0].statements,
        vec![
            "SELECT 1; -- one\n".to_string(),
            "SELECT\n  2;\n".to_string()
        ]
    );
}
