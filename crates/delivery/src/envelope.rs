//! The request body: built once per event and stored, so every subscriber and every retry
//! gets (and signs) the same bytes.

use serde_json::{Map, Value};

use crate::clock;
use crate::InvalidField;

/// Key under which an UPDATE's changed columns are added to `data`.
pub const CHANGES_KEY: &str = "alteracoes";

/// First second that RFC 3339 cannot write (year 10000).
const END_OF_YEAR_9999: i64 = 253_402_300_800;

/// `{"id":…,"event":…,"timestamp":…,"data":…}`, compact, keys in this order.
///
/// `data_json` and `changes_json` are JSON texts from Postgres; their key order and the exact
/// text of their numbers are kept (big `numeric`s must not be rounded through `f64`).
pub fn build(
    event_id: &str,
    event: &str,
    emitted_at_unix_secs: i64,
    data_json: &str,
    changes_json: Option<&str>,
) -> Result<String, InvalidField> {
    let data: Value = serde_json::from_str(data_json)
        .map_err(|e| InvalidField::new("data", format!("not valid JSON ({e})")))?;
    let changes = changes_json
        .map(|changes_json| {
            serde_json::from_str(changes_json)
                .map_err(|e| InvalidField::new("data", format!("changes are not valid JSON ({e})")))
        })
        .transpose()?;
    assemble(event_id, event, emitted_at_unix_secs, data, changes)
}

/// [`build`] from parsed values (the native trigger parses the row itself).
pub fn assemble(
    event_id: &str,
    event: &str,
    emitted_at_unix_secs: i64,
    mut data: Value,
    changes: Option<Value>,
) -> Result<String, InvalidField> {
    if let Some(changes) = changes {
        let Value::Object(fields) = &mut data else {
            return Err(InvalidField::new(
                "data",
                "must be a JSON object to carry changes",
            ));
        };
        // shift_remove keeps the other keys in place; the changes always come last.
        fields.shift_remove(CHANGES_KEY);
        fields.insert(CHANGES_KEY.to_owned(), changes);
    }

    let mut envelope = Map::new();
    envelope.insert("id".into(), event_id.into());
    envelope.insert("event".into(), event.into());
    envelope.insert("timestamp".into(), rfc3339(emitted_at_unix_secs)?.into());
    envelope.insert("data".into(), data);
    Ok(Value::Object(envelope).to_string())
}

/// [`assemble`] around data already written as compact JSON (Postgres' `row_to_json` of a
/// row whose columns parse and print back to the same text): the same body, without parsing
/// and printing the data again.
pub fn assemble_compact(
    event_id: &str,
    event: &str,
    emitted_at_unix_secs: i64,
    compact_data_json: &str,
) -> Result<String, InvalidField> {
    let timestamp = rfc3339(emitted_at_unix_secs)?;
    let mut body = String::with_capacity(96 + event.len() + compact_data_json.len());
    body.push_str("{\"id\":");
    body.push_str(&Value::from(event_id).to_string());
    body.push_str(",\"event\":");
    body.push_str(&Value::from(event).to_string());
    body.push_str(",\"timestamp\":\"");
    body.push_str(&timestamp);
    body.push_str("\",\"data\":");
    body.push_str(compact_data_json);
    body.push('}');
    Ok(body)
}

/// An UPDATE's changed columns, in the new row's column order:
/// `{"<column>": {"anterior": <old>, "novo": <new>}}`, or None when nothing changed.
/// Values are compared as the JSON Postgres wrote for them (numbers keep their text, so
/// `1.0` → `1.00` is a change, as the stored value changed).
pub fn changed_columns(
    old_row: &Map<String, Value>,
    new_row: &Map<String, Value>,
) -> Option<Value> {
    let changes: Map<String, Value> = new_row
        .iter()
        .filter_map(|(column, new)| {
            let old = old_row.get(column)?;
            (old != new).then(|| {
                let mut change = Map::new();
                change.insert("anterior".into(), old.clone());
                change.insert("novo".into(), new.clone());
                (column.clone(), Value::Object(change))
            })
        })
        .collect();
    (!changes.is_empty()).then_some(Value::Object(changes))
}

fn rfc3339(unix_secs: i64) -> Result<String, InvalidField> {
    if !(0..END_OF_YEAR_9999).contains(&unix_secs) {
        return Err(InvalidField::new(
            "timestamp",
            "must be between 1970-01-01 and 9999-12-31",
        ));
    }
    let time = clock::from_unix_seconds(unix_secs.unsigned_abs());
    Ok(humantime::format_rfc3339_seconds(time).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "5b2f8e4a-1c3d-4e5f-8a9b-0c1d2e3f4a5b";
    const JAN_1_2024_10H: i64 = 1_704_103_200;

    #[test]
    fn key_order_and_compactness() {
        let body = build(
            ID,
            "cliente.criado",
            JAN_1_2024_10H,
            r#"{"z": 1, "a": 2}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            body,
            format!(
                r#"{{"id":"{ID}","event":"cliente.criado","timestamp":"2024-01-01T10:00:00Z","data":{{"z":1,"a":2}}}}"#
            )
        );
    }

    #[test]
    fn compact_data_gives_the_same_body_as_parsed_data() {
        let rows = [
            r#"{"id":42,"nome":"São \"Jo\\s\u0001\"","email":null,"saldo":12.50,"big":123456789012345678901234567890,"f":1e+100,"nan":"NaN","ok":true,"tags":["a","b"],"grid":[[1,2],[3,4]],"criado_em":"2024-01-01T10:00:00.123456+00:00"}"#,
            r#"{}"#,
            r#"{"cidade":"São Paulo","emoji":"🎉","tab":"a\tb\n"}"#,
        ];
        for row in rows {
            for event in ["cliente.created", "evento \"estranho\"\\"] {
                let parsed = assemble(
                    ID,
                    event,
                    JAN_1_2024_10H,
                    serde_json::from_str(row).unwrap(),
                    None,
                )
                .unwrap();
                assert_eq!(
                    assemble_compact(ID, event, JAN_1_2024_10H, row).unwrap(),
                    parsed
                );
            }
        }
        assert_eq!(
            assemble_compact(ID, "e", -1, "{}").unwrap_err().field,
            "timestamp"
        );
    }

    #[test]
    fn non_ascii_text_stays_utf8() {
        let body = build(
            ID,
            "e",
            0,
            r#"{"cidade": "São Paulo", "emoji": "🎉"}"#,
            None,
        )
        .unwrap();
        assert!(
            body.contains(r#""data":{"cidade":"São Paulo","emoji":"🎉"}"#),
            "{body}"
        );
        assert!(!body.contains("\\u"));
        assert!(body.contains(r#""timestamp":"1970-01-01T00:00:00Z""#));
    }

    #[test]
    fn numbers_keep_their_text() {
        // Postgres prints numerics in plain notation, with every digit and trailing zero.
        let data = r#"{"big": 123456789012345678901234.5678, "f": 1.10, "tiny": -0.000000000000000000001, "i": 9007199254740993}"#;
        let body = build(ID, "e", JAN_1_2024_10H, data, None).unwrap();
        assert!(
            body.ends_with(r#""data":{"big":123456789012345678901234.5678,"f":1.10,"tiny":-0.000000000000000000001,"i":9007199254740993}}"#),
            "{body}"
        );
    }

    #[test]
    fn any_json_value_is_data() {
        let cases = [
            ("null", "null"),
            ("[1, [2, {\"b\": [3]}], \"x\"]", r#"[1,[2,{"b":[3]}],"x"]"#),
            ("\"text\"", "\"text\""),
            ("42", "42"),
            ("{\"a\": {\"b\": {\"c\": []}}}", r#"{"a":{"b":{"c":[]}}}"#),
        ];
        for (data, expected) in cases {
            let body = build(ID, "e", JAN_1_2024_10H, data, None).unwrap();
            assert!(body.ends_with(&format!(r#""data":{expected}}}"#)), "{body}");
        }
    }

    #[test]
    fn changes_become_the_last_key() {
        let changes = r#"{"nome": {"anterior": "Ana", "novo": "Ana Maria"}}"#;
        let body = build(
            ID,
            "cliente.atualizado",
            JAN_1_2024_10H,
            r#"{"id": 7, "nome": "Ana Maria"}"#,
            Some(changes),
        )
        .unwrap();
        assert!(
            body.ends_with(
                r#""data":{"id":7,"nome":"Ana Maria","alteracoes":{"nome":{"anterior":"Ana","novo":"Ana Maria"}}}}"#
            ),
            "{body}"
        );
    }

    #[test]
    fn changes_replace_a_column_of_the_same_name_at_the_end() {
        let body = build(ID, "e", 0, r#"{"alteracoes": "col", "id": 1}"#, Some("{}")).unwrap();
        assert!(
            body.ends_with(r#""data":{"id":1,"alteracoes":{}}}"#),
            "{body}"
        );
    }

    fn row(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn changed_columns_in_column_order_with_their_exact_text() {
        let old = row(r#"{"id": 1, "nome": "Ana", "email": "a@x", "saldo": 0.00, "tags": ["a"]}"#);
        let new = row(r#"{"id": 1, "nome": "Ana", "email": null, "saldo": 10.00, "tags": ["a"]}"#);
        let changes = changed_columns(&old, &new).unwrap();
        assert_eq!(
            changes.to_string(),
            r#"{"email":{"anterior":"a@x","novo":null},"saldo":{"anterior":0.00,"novo":10.00}}"#
        );
        let body = assemble(ID, "e", 0, Value::Object(new), Some(changes)).unwrap();
        assert!(
            body.ends_with(r#""tags":["a"],"alteracoes":{"email":{"anterior":"a@x","novo":null},"saldo":{"anterior":0.00,"novo":10.00}}}}"#),
            "{body}"
        );
    }

    #[test]
    fn nothing_changed_is_none_and_a_new_scale_is_a_change() {
        let same = row(r#"{"id": 1, "extra": {"a": [1, 2]}, "n": null}"#);
        assert_eq!(changed_columns(&same, &same.clone()), None);
        let old = row(r#"{"preco": 1.0}"#);
        let new = row(r#"{"preco": 1.00}"#);
        assert!(changed_columns(&old, &new).is_some());
    }

    #[test]
    fn errors() {
        let err = build(ID, "e", 0, "{not json", None).unwrap_err();
        assert_eq!(err.field, "data");
        assert!(err.message.starts_with("not valid JSON"), "{err}");
        assert_eq!(build(ID, "e", 0, "", None).unwrap_err().field, "data");
        let err = build(ID, "e", 0, "[1]", Some("{}")).unwrap_err();
        assert_eq!(err.field, "data");
        assert!(err.message.contains("JSON object"));
        let err = build(ID, "e", 0, "{}", Some("{")).unwrap_err();
        assert!(
            err.message.starts_with("changes are not valid JSON"),
            "{err}"
        );
        assert_eq!(
            build(ID, "e", -1, "{}", None).unwrap_err().field,
            "timestamp"
        );
        assert_eq!(
            build(ID, "e", END_OF_YEAR_9999, "{}", None)
                .unwrap_err()
                .field,
            "timestamp"
        );
        let last = build(ID, "e", END_OF_YEAR_9999 - 1, "{}", None).unwrap();
        assert!(last.contains("9999-12-31T23:59:59Z"));
    }
}
