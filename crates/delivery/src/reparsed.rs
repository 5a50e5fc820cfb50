//! What receivers that re-parse the body compute from it, byte for byte (SPEC §11):
//!
//! - [`javascript`]: `JSON.stringify(JSON.parse(body))` in Node — every number as JavaScript
//!   prints a `Number` (shortest round trip, `1e+21`, `1e-7`, `199.9`; integers beyond 2^53
//!   rounded as a double), and in every object the keys that are array indices first, in
//!   ascending order, as JavaScript enumerates them.
//! - [`python_sorted`]: `json.dumps(json.loads(body), sort_keys=True)` in Python — keys sorted,
//!   `", "` and `": "` separators, `ensure_ascii` escapes (surrogate pairs beyond the BMP),
//!   integers exact at any size, other numbers as Python's `repr(float)`.
//!
//! Both take a JSON text and never round a number through `f64` unless the receiver would.
//! Where the receiver's result cannot be reproduced (a number JavaScript reads as Infinity, an
//! integer Python refuses to read), they return an error saying so instead of a guess.

use serde_json::{Map, Number, Value};

/// Largest array index: JavaScript enumerates keys "0" ..= "4294967294" first, in numeric order.
const MAX_ARRAY_INDEX: u64 = 4_294_967_294;

/// Python refuses to convert integers with more digits than this (`sys.get_int_max_str_digits()`,
/// 4300 by default since 3.11): `json.loads` raises ValueError on them.
const PYTHON_MAX_INT_DIGITS: usize = 4300;

fn parse(json: &str) -> Result<Value, String> {
    serde_json::from_str(json).map_err(|e| format!("the body is not valid JSON ({e})"))
}

/// `JSON.stringify(JSON.parse(json))` as Node computes it.
pub fn javascript(json: &str) -> Result<String, String> {
    let mut out = String::with_capacity(json.len());
    write_javascript(&parse(json)?, &mut out)?;
    Ok(out)
}

/// Is `key` an array index, which JavaScript enumerates before every other key?
fn array_index(key: &str) -> Option<u64> {
    let canonical = key == "0"
        || (!key.is_empty()
            && key.len() <= 10
            && !key.starts_with('0')
            && key.bytes().all(|b| b.is_ascii_digit()));
    canonical
        .then(|| key.parse::<u64>().ok())
        .flatten()
        .filter(|&index| index <= MAX_ARRAY_INDEX)
}

/// An object's entries in the order JavaScript enumerates them.
fn javascript_order(fields: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut indices: Vec<(u64, &String, &Value)> = fields
        .iter()
        .filter_map(|(key, value)| array_index(key).map(|index| (index, key, value)))
        .collect();
    if indices.is_empty() {
        return fields.iter().collect();
    }
    indices.sort_by_key(|&(index, _, _)| index);
    indices
        .into_iter()
        .map(|(_, key, value)| (key, value))
        .chain(fields.iter().filter(|(key, _)| array_index(key).is_none()))
        .collect()
}

fn write_javascript(value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&value.to_string()),
        Value::Number(number) => out.push_str(&javascript_number(number)?),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_javascript(item, out)?;
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (key, item)) in javascript_order(fields).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_javascript(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A JSON number as `JSON.stringify` writes the double `JSON.parse` makes of it.
pub fn javascript_number(number: &Number) -> Result<String, String> {
    let text = number.to_string();
    // Rust's parse rounds to the nearest double, ties to even, as JSON.parse does.
    let double: f64 = text
        .parse()
        .map_err(|_| "a number of the body is not a JSON number".to_string())?;
    if !double.is_finite() {
        // The row's value stays out of the message: it is data from the user's tables.
        return Err(
            "a number of the body is beyond JavaScript's range (JSON.parse reads it as Infinity \
             and JSON.stringify writes null), so json_numbers = 'javascript' cannot carry it"
                .to_string(),
        );
    }
    if double == 0.0 {
        // JSON.stringify(-0) is "0".
        return Ok("0".to_string());
    }
    Ok(ryu_js::Buffer::new().format_finite(double).to_string())
}

/// `json.dumps(json.loads(json), sort_keys=True)` as Python computes it.
pub fn python_sorted(json: &str) -> Result<String, String> {
    let mut out = String::with_capacity(json.len() + json.len() / 4);
    // No depth check: serde_json reads at most 128 levels, and Python's json reads ~990.
    write_python(&parse(json)?, &mut out)?;
    Ok(out)
}

fn write_python(value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => out.push_str(&python_number(number)?),
        Value::String(text) => write_python_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python(item, out)?;
            }
            out.push(']');
        }
        Value::Object(fields) => {
            // Python compares str by code point; UTF-8 byte order is the same order.
            let mut entries: Vec<(&String, &Value)> = fields.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_string(key, out);
                out.push_str(": ");
                write_python(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A string as `json.dumps` writes it with `ensure_ascii=True`: printable ASCII as is,
/// everything else `\uXXXX` (lowercase, a surrogate pair beyond U+FFFF).
fn write_python_string(text: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A JSON number as Python writes back what `json.loads` made of it: an `int` (exact, any
/// size) when it has no fraction and no exponent, else a `float` in `repr` form.
pub fn python_number(number: &Number) -> Result<String, String> {
    let text = number.to_string();
    let is_integer = !text.contains(['.', 'e', 'E']);
    if is_integer {
        let digits = text.trim_start_matches('-');
        if digits.len() > PYTHON_MAX_INT_DIGITS {
            return Err(format!(
                "an integer of {} digits is beyond what Python's json.loads reads (at most {PYTHON_MAX_INT_DIGITS} digits by default)",
                digits.len()
            ));
        }
        // int("-0") is 0.
        return Ok(if digits == "0" { "0".to_string() } else { text });
    }
    let double: f64 = text
        .parse()
        .map_err(|_| "a number of the body is not a JSON number".to_string())?;
    Ok(python_float_repr(double))
}

/// `repr(x)` of a Python float: the shortest digits that read back as `x`, in plain notation
/// with at least one fractional digit when the decimal exponent is in -4..16, else
/// `d.ddde±XX` (two exponent digits at least). json.dumps writes infinities as `Infinity`.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{sign}0.0");
    }
    let (digits, point) = shortest_digits(x.abs());
    // The value is 0.<digits> × 10^point.
    let repr = if point <= -4 || point > 16 {
        let exponent = point - 1;
        let mantissa = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{exponent_sign}{:02}", exponent.unsigned_abs())
    } else if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    format!("{sign}{repr}")
}

/// The shortest decimal digits that read back as `x` (finite, > 0), without leading or
/// trailing zeros, and the position of the decimal point: x = 0.<digits> × 10^point.
fn shortest_digits(x: f64) -> (String, i32) {
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(x);
    let (mantissa, exponent) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().expect("ryu writes an integer exponent")),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{whole}{fraction}");
    let leading = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0').to_string();
    let point = whole.len() as i32 - leading as i32 + exponent;
    (digits, point)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn js(json: &str) -> String {
        javascript(json).unwrap()
    }

    fn py(json: &str) -> String {
        python_sorted(json).unwrap()
    }

    #[test]
    fn javascript_numbers() {
        let cases = [
            ("199.90", "199.9"),
            ("1.0", "1"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("1E+2", "100"),
            ("100", "100"),
            ("0.1", "0.1"),
            ("1e21", "1e+21"),
            ("123456789012345678901", "123456789012345680000"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1e-7"),
            ("9007199254740993", "9007199254740992"),
            ("123456789012345678901234.5678", "1.2345678901234569e+23"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("5e-324", "5e-324"),
            ("-12.50", "-12.5"),
        ];
        for (input, expected) in cases {
            assert_eq!(js(input), expected, "{input}");
        }
        let err = javascript("[1e400]").unwrap_err();
        assert!(err.contains("beyond JavaScript's range"), "{err}");
        // The value is data from the user's tables: it stays out of the reason.
        assert!(!err.contains("1e400") && !err.contains("1e+400"), "{err}");
    }

    #[test]
    fn javascript_key_order_puts_array_indices_first_at_every_level() {
        assert_eq!(
            js(
                r#"{"b":1,"10":2,"a":{"z":0,"2":1,"1":2},"2":3,"01":4,"-1":5,"4294967294":6,"4294967295":7}"#
            ),
            r#"{"2":3,"10":2,"4294967294":6,"b":1,"a":{"1":2,"2":1,"z":0},"01":4,"-1":5,"4294967295":7}"#
        );
    }

    #[test]
    fn javascript_keeps_strings_and_compactness() {
        let body = r#"{"a":"São \"x\" \\ \n\u0001 🎉","b":[true,false,null,{},[]]}"#;
        assert_eq!(js(body), body);
    }

    #[test]
    fn python_numbers() {
        let cases = [
            ("199.90", "199.9"),
            ("1.0", "1.0"),
            ("-0", "0"),
            ("-0.0", "-0.0"),
            ("0.0", "0.0"),
            ("1E+2", "100.0"),
            ("1e16", "1e+16"),
            ("1e15", "1000000000000000.0"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
            ),
            ("123456789012345678901234.5678", "1.2345678901234569e+23"),
            ("1.5e-7", "1.5e-07"),
            ("1e400", "Infinity"),
            ("-1e400", "-Infinity"),
            ("1e-400", "0.0"),
            ("2.5e300", "2.5e+300"),
            ("12.340", "12.34"),
        ];
        for (input, expected) in cases {
            assert_eq!(py(input), expected, "{input}");
        }
        let huge = "9".repeat(4301);
        let err = python_sorted(&huge).unwrap_err();
        assert!(
            err.contains("4301 digits") && !err.contains("9999"),
            "{err}"
        );
        assert_eq!(py(&"9".repeat(4300)), "9".repeat(4300));
    }

    #[test]
    fn python_sorts_keys_and_escapes_to_ascii() {
        assert_eq!(
            py(r#"{"b":[1,{"d":null,"c":true}],"a":"São 🎉 \u007f\"\\\n/","":{}, "é":[]}"#),
            r#"{"": {}, "a": "S\u00e3o \ud83c\udf89 \u007f\"\\\n/", "b": [1, {"c": true, "d": null}], "\u00e9": []}"#
        );
    }

    #[test]
    fn python_refuses_what_it_cannot_read() {
        assert!(python_sorted("{").unwrap_err().contains("not valid JSON"));
    }
}

/// The same functions checked against the real runtimes partners use: `node` and `python3`
/// (installed by scripts/setup.sh; a missing one fails these tests rather than skipping them)
/// over generated bodies with nested objects, accents, emoji, escapes, trailing zeros, large
/// and small floats, integers beyond 2^53, true/false/null, empty containers and integer-like
/// keys.
#[cfg(test)]
mod against_real_runtimes {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

    /// A small deterministic generator (xorshift64*), so a failure can be reproduced.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }

        fn number(&mut self) -> String {
            const FIXED: &[&str] = &[
                "199.90",
                "0.10",
                "1.0",
                "-0",
                "-0.0",
                "0",
                "1E+2",
                "1e2",
                "2.5E-3",
                "1e21",
                "1e20",
                "123456789012345678901",
                "0.000001",
                "0.0000001",
                "1e-7",
                "9007199254740993",
                "9007199254740992",
                "-9007199254740993",
                "18446744073709551616",
                "123456789012345678901234567890.000",
                "123456789012345678901234.5678",
                "1.7976931348623157e308",
                "5e-324",
                "2.2250738585072014e-308",
                "1e16",
                "1e15",
                "0.0001",
                "0.00001",
                "100",
                "-12.50",
                "3.14159265358979323846264338327950288",
            ];
            match self.below(4) {
                0 => self.pick(FIXED).to_string(),
                1 => format!("{}", self.next() as i64 >> self.below(60)),
                2 => {
                    let mantissa = self.below(10_000_000_000);
                    let scale = self.below(12) as usize;
                    let digits = format!("{mantissa:0>width$}", width = scale + 1);
                    let (whole, fraction) = digits.split_at(digits.len() - scale);
                    let sign = if self.below(2) == 0 { "-" } else { "" };
                    if scale == 0 {
                        format!("{sign}{whole}")
                    } else {
                        format!("{sign}{whole}.{fraction}")
                    }
                }
                _ => {
                    let exponent = self.below(640) as i64 - 320;
                    format!("{}.{}e{exponent}", 1 + self.below(9), self.below(1_000_000))
                }
            }
        }

        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "São Paulo",
                "José",
                "ação",
                "🎉",
                "👍🏽",
                "中文",
                "\"quoted\"",
                "back\\slash",
                "line\nbreak",
                "tab\t",
                "\u{1}",
                "\u{1f}",
                "\u{7f}",
                "\u{2028}",
                "/",
                "<b>",
                "",
                "plain",
                "€",
                "\u{10ffff}",
            ];
            (0..self.below(4)).map(|_| self.pick(PIECES)).collect()
        }

        fn key(&mut self) -> String {
            const KEYS: &[&str] = &[
                "0",
                "1",
                "2",
                "10",
                "01",
                "-1",
                "1.5",
                "4294967294",
                "4294967295",
                "id",
                "nome",
                "valor",
                "ação",
                "🎉",
                "b",
                "a",
                "Z",
                "",
            ];
            if self.below(3) == 0 {
                self.string()
            } else {
                self.pick(KEYS).to_string()
            }
        }

        fn value(&mut self, depth: u32) -> String {
            let choice = if depth >= 4 {
                self.below(5)
            } else {
                self.below(8)
            };
            match choice {
                0 => self.pick(&["true", "false", "null"]).to_string(),
                1 | 2 => self.number(),
                3 | 4 => Value::String(self.string()).to_string(),
                5 => {
                    let items: Vec<String> =
                        (0..self.below(4)).map(|_| self.value(depth + 1)).collect();
                    format!("[{}]", items.join(","))
                }
                _ => {
                    let fields: Vec<String> = (0..self.below(6))
                        .map(|_| {
                            let key = Value::String(self.key()).to_string();
                            format!("{key}:{}", self.value(depth + 1))
                        })
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }
            }
        }

        /// A body as the extension writes it: compact, from Postgres' JSON.
        fn body(&mut self) -> String {
            let data = self.value(0);
            let parsed: Value = serde_json::from_str(&data).unwrap();
            format!(
                r#"{{"id":"e1","event":"cliente.criado","timestamp":"2024-01-01T10:00:00Z","data":{parsed}}}"#
            )
        }
    }

    fn bodies(seed: u64, count: usize) -> Vec<String> {
        let mut generator = Gen(seed);
        (0..count).map(|_| generator.body()).collect()
    }

    /// Runs `program args` with one body per stdin line; returns its stdout lines.
    fn run(program: &str, args: &[&str], input: &[String]) -> Vec<String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} is needed (run `bash scripts/setup.sh`): {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let text = input.join("\n") + "\n";
        let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()).unwrap());
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(
            output.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    const NODE: &str = r#"
        const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter(l => l.length);
        for (const body of lines) process.stdout.write(JSON.stringify(JSON.parse(body)) + '\n');
    "#;

    const PYTHON: &str = r#"
import json, sys
for line in sys.stdin.buffer.read().decode('utf-8').split('\n'):
    if line:
        try:
            print(json.dumps(json.loads(line), sort_keys=True))
        except ValueError as e:
            print('ValueError')
"#;

    #[test]
    fn javascript_is_what_node_writes_back_and_node_keeps_it() {
        let bodies = bodies(0x5eed_0001, 400);
        let node = run("node", &["-e", NODE], &bodies);
        assert_eq!(node.len(), bodies.len());
        let mut ours = Vec::new();
        for (body, from_node) in bodies.iter().zip(&node) {
            match javascript(body) {
                Ok(rewritten) => {
                    assert_eq!(&rewritten, from_node, "body: {body}");
                    // What the send-time check relies on (format::check_javascript_body).
                    assert_eq!(javascript(&rewritten).unwrap(), rewritten);
                    ours.push(rewritten);
                }
                // Only a number beyond the double range, which Node writes as null.
                Err(e) => {
                    assert!(e.contains("beyond JavaScript's range"), "{e}");
                    assert!(from_node.contains("null"), "{body} → {from_node}");
                }
            }
        }
        assert!(ours.len() > bodies.len() / 2, "too few bodies to check");
        // What Express receivers verify: JSON.stringify(JSON.parse(body)) === body.
        assert_eq!(run("node", &["-e", NODE], &ours), ours);
    }

    #[test]
    fn python_sorted_is_what_python_computes() {
        let mut bodies = bodies(0x5eed_0002, 400);
        bodies.push(format!("[{}]", "7".repeat(4301)));
        bodies.push(format!("[{}]", "7".repeat(4300)));
        let python = run("python3", &["-c", PYTHON], &bodies);
        assert_eq!(python.len(), bodies.len());
        for (body, from_python) in bodies.iter().zip(&python) {
            match python_sorted(body) {
                Ok(ours) => assert_eq!(&ours, from_python, "body: {body}"),
                Err(e) => assert_eq!(from_python, "ValueError", "{body}: {e}"),
            }
        }
    }
}
