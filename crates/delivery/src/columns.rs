//! What of a row the trigger sends: the columns chosen by its last argument (`columns=a,b` or
//! `exclude=x,y`), and the row's `event_key` (its primary key as text).

use serde_json::{Map, Value};

use crate::InvalidField;

/// The columns a trigger sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Only these (`columns=a,b,c`).
    Only(Vec<String>),
    /// All but these (`exclude=x,y`).
    Exclude(Vec<String>),
}

impl Selection {
    /// The trigger argument's field name, for messages.
    pub fn field(&self) -> &'static str {
        match self {
            Selection::Only(_) => "columns",
            Selection::Exclude(_) => "exclude",
        }
    }

    fn names(&self) -> &[String] {
        match self {
            Selection::Only(names) | Selection::Exclude(names) => names,
        }
    }

    /// Keep only the chosen columns of a row (in the row's own order).
    pub fn apply(&self, row: &mut Map<String, Value>) {
        match self {
            Selection::Only(names) => row.retain(|column, _| names.iter().any(|n| n == column)),
            Selection::Exclude(names) => row.retain(|column, _| !names.iter().any(|n| n == column)),
        }
    }

    /// Every named column must exist in the table (`columns`: its columns, in order).
    pub fn check(&self, table: &str, columns: &[String]) -> Result<(), InvalidField> {
        for name in self.names() {
            if !columns.iter().any(|c| c == name) {
                return Err(InvalidField::new(
                    self.field(),
                    format!(
                        "table {table} has no column \"{name}\" (webhook_trigger's last argument)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A trigger's last argument, if it chooses columns: `columns=a,b,c` or `exclude=x,y` (names
/// as the table spells them, spaces around commas ignored). None if the argument is not one.
pub fn parse_selection(argument: &str) -> Option<Result<Selection, InvalidField>> {
    let (field, list, only) = if let Some(list) = argument.strip_prefix("columns=") {
        ("columns", list, true)
    } else if let Some(list) = argument.strip_prefix("exclude=") {
        ("exclude", list, false)
    } else {
        return None;
    };
    let names: Vec<String> = list.split(',').map(|n| n.trim().to_string()).collect();
    if names.iter().any(String::is_empty) {
        return Some(Err(InvalidField::new(
            field,
            format!("{argument:?} has an empty column name; write e.g. {field}=id,nome"),
        )));
    }
    Some(Ok(if only {
        Selection::Only(names)
    } else {
        Selection::Exclude(names)
    }))
}

/// The event key of a row: the text of its one primary-key column, a JSON array of its
/// several ones, None without a primary key (or if a key column is missing from the row).
pub fn event_key(row: &Map<String, Value>, key_columns: &[String]) -> Option<String> {
    match key_columns {
        [] => None,
        [column] => row.get(column).and_then(|value| match value {
            Value::Null => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }),
        columns => {
            let values: Option<Vec<&Value>> = columns.iter().map(|c| row.get(c)).collect();
            values.map(|values| Value::from_iter(values.into_iter().cloned()).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn selection_arguments_are_recognised_and_others_are_not() {
        assert_eq!(
            parse_selection("columns=id, nome").unwrap().unwrap(),
            Selection::Only(vec!["id".into(), "nome".into()])
        );
        assert_eq!(
            parse_selection("exclude=cpf,senha_hash").unwrap().unwrap(),
            Selection::Exclude(vec!["cpf".into(), "senha_hash".into()])
        );
        assert!(parse_selection("cliente").is_none());
        assert!(parse_selection("cliente.criado").is_none());
        let empty = parse_selection("columns=id,,nome").unwrap().unwrap_err();
        assert_eq!(empty.field, "columns");
    }

    #[test]
    fn apply_keeps_the_row_order_and_only_the_chosen_columns() {
        let mut r = row(json!({"id": 1, "cpf": "x", "nome": "Ana", "senha_hash": "y"}));
        Selection::Exclude(vec!["cpf".into(), "senha_hash".into()]).apply(&mut r);
        assert_eq!(Value::Object(r).to_string(), r#"{"id":1,"nome":"Ana"}"#);
        let mut r = row(json!({"id": 1, "cpf": "x", "nome": "Ana"}));
        Selection::Only(vec!["nome".into(), "id".into()]).apply(&mut r);
        assert_eq!(Value::Object(r).to_string(), r#"{"id":1,"nome":"Ana"}"#);
    }

    #[test]
    fn check_names_the_unknown_column_and_the_field() {
        let columns = vec!["id".to_string(), "nome".to_string()];
        assert!(Selection::Only(vec!["id".into()])
            .check("public.cliente", &columns)
            .is_ok());
        let e = Selection::Exclude(vec!["cpf".into()])
            .check("public.cliente", &columns)
            .unwrap_err();
        assert_eq!(e.field, "exclude");
        assert!(e.message.contains("\"cpf\""), "{e}");
    }

    #[test]
    fn event_key_is_the_primary_key_text_or_a_json_array() {
        let r = row(json!({"id": 42, "tenant_id": 7, "code": "a\"b", "gone": null}));
        assert_eq!(event_key(&r, &["id".into()]).as_deref(), Some("42"));
        assert_eq!(event_key(&r, &["code".into()]).as_deref(), Some("a\"b"));
        assert_eq!(
            event_key(&r, &["tenant_id".into(), "code".into()]).as_deref(),
            Some(r#"[7,"a\"b"]"#)
        );
        assert_eq!(event_key(&r, &[]), None);
        assert_eq!(event_key(&r, &["gone".into()]), None);
        assert_eq!(event_key(&r, &["missing".into()]), None);
    }
}
