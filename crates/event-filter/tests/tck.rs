//! The CloudEvents SQL TCK: every case of the `cesql/cesql_tck` suites of
//! the CloudEvents specification repository, encoded one per line in
//! `tests/tck/cases.jsonl` (suite, case name, expression, input event or
//! overrides of a default event, expected value, expected error class).
//! A case expecting a parse error must fail to parse (or, for an unknown
//! function, fail the static check); every other case must parse, and its
//! evaluation must give the expected value and exactly the expected error
//! class (or none).

use event_filter::cesql::{parse, EvalErrorKind, Value};
use event_filter::{AttributeValue, EventAttributes};
use std::collections::BTreeMap;

/// The number of cases in the TCK: none may be skipped silently.
const TCK_CASES: usize = 275;

#[derive(Debug)]
struct JsonEvent(BTreeMap<String, serde_json::Value>);

impl EventAttributes for JsonEvent {
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>> {
        match self.0.get(name)? {
            serde_json::Value::String(s) => Some(AttributeValue::String(s)),
            serde_json::Value::Bool(b) => Some(AttributeValue::Boolean(*b)),
            serde_json::Value::Number(n) => n.as_i64().map(AttributeValue::Integer),
            _ => None,
        }
    }
}

fn event_of(case: &serde_json::Value) -> JsonEvent {
    let mut map: BTreeMap<String, serde_json::Value> = match case.get("event") {
        Some(serde_json::Value::Object(o)) => o.clone().into_iter().collect(),
        _ => [
            ("specversion", "1.0"),
            ("id", "tck-id"),
            ("source", "/tck"),
            ("type", "tck.type"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect(),
    };
    if let Some(serde_json::Value::Object(o)) = case.get("overrides") {
        for (k, v) in o {
            map.insert(k.clone(), v.clone());
        }
    }
    JsonEvent(map)
}

fn kind_name(k: EvalErrorKind) -> &'static str {
    match k {
        EvalErrorKind::Math => "math",
        EvalErrorKind::Cast => "cast",
        EvalErrorKind::MissingAttribute => "missingAttribute",
        EvalErrorKind::MissingFunction => "missingFunction",
        EvalErrorKind::FunctionEvaluation => "functionEvaluation",
        EvalErrorKind::Generic => "generic",
    }
}

fn as_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(n) => serde_json::Value::from(*n),
        Value::String(s) => serde_json::Value::String(s.to_string()),
    }
}

/// Run one case; `Err` says how it failed.
fn run(case: &serde_json::Value) -> Result<(), String> {
    let expr = case["expr"].as_str().ok_or("no expression")?;
    let want_error = case.get("error").and_then(|e| e.as_str());
    let parsed = match parse(expr) {
        Ok(p) => p,
        Err(e) if want_error == Some("parse") => {
            let _ = e;
            return Ok(());
        }
        Err(e) => return Err(format!("does not parse: {e}")),
    };
    if want_error == Some("parse") {
        return Err(format!("parses as {parsed}, expected a parse error"));
    }
    let event = event_of(case);
    let out = parsed.evaluate(&event);
    let kinds: Vec<&str> = out.errors.iter().map(|e| kind_name(e.kind)).collect();
    match want_error {
        None if !kinds.is_empty() => return Err(format!("unexpected errors {:?}", out.errors)),
        Some(k) if !kinds.contains(&k) => {
            return Err(format!("expected a {k} error, got {:?}", out.errors))
        }
        _ => {}
    }
    if let Some(want) = case.get("want") {
        let got = as_json(&out.value);
        if &got != want {
            return Err(format!("value {got}, expected {want}"));
        }
    }
    Ok(())
}

#[test]
fn every_tck_case_passes() {
    let text = include_str!("tck/cases.jsonl");
    let cases: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a TCK case"))
        .collect();
    assert_eq!(cases.len(), TCK_CASES, "the TCK has {TCK_CASES} cases");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            run(c).err().map(|why| {
                format!(
                    "{} / {}: `{}`: {why}",
                    c["suite"].as_str().unwrap_or("?"),
                    c["case"].as_str().unwrap_or("?"),
                    c["expr"].as_str().unwrap_or("?")
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} TCK cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
