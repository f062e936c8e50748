//! The CloudEvents SQL TCK (the `cesql/cesql_tck` suites of the CloudEvents
//! specification repository), every case of it.
//!
//! `tests/tck/<suite>.jsonl` holds one case per line, in this crate's own
//! format:
//!
//! * `case`: the TCK's name of the case;
//! * `expr`: the expression;
//! * `expect`: `"parse-error"`, or `{"value": v}` with an optional
//!   `"error"` class (`math`, `cast`, `missingAttribute`,
//!   `missingFunction`, `functionEvaluation`, `generic`);
//! * `event`: the whole input event, or `with`: attributes set on a
//!   default valid event (the TCK's `eventOverrides`).
//!
//! A parse-error case must fail to parse; every other case must parse,
//! yield exactly the value and exactly the error class (or none). All
//! failures are reported, by suite and case name, and the number of cases
//! must be the TCK's, so that none is skipped silently.

use event_filter::cesql::{parse, ErrorKind, Value};
use event_filter::{MapEvent, MapValue};
use serde_json::Value as Json;
use std::path::Path;

/// The number of cases in the TCK (18 suites).
const TCK_CASES: usize = 275;
/// The number of suites.
const TCK_SUITES: usize = 18;

fn error_kind(class: &str) -> Option<ErrorKind> {
    Some(match class {
        "math" => ErrorKind::Math,
        "cast" => ErrorKind::Cast,
        "missingAttribute" => ErrorKind::MissingAttribute,
        "missingFunction" => ErrorKind::MissingFunction,
        "functionEvaluation" => ErrorKind::FunctionEvaluation,
        "generic" => ErrorKind::Generic,
        _ => return None,
    })
}

fn json_value(v: &Json) -> Option<Value> {
    Some(match v {
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => Value::Integer(i32::try_from(n.as_i64()?).ok()?),
        Json::String(s) => Value::String(s.clone()),
        _ => return None,
    })
}

fn attribute(v: &Json) -> Option<MapValue> {
    Some(match v {
        Json::Bool(b) => MapValue::Boolean(*b),
        Json::Number(n) => MapValue::Integer(n.as_i64()?),
        Json::String(s) => MapValue::String(s.clone()),
        _ => return None,
    })
}

fn fill(event: &mut MapEvent, attrs: &Json) -> Result<(), String> {
    let attrs = attrs.as_object().ok_or("event is not an object")?;
    for (k, v) in attrs {
        event.set(
            k,
            attribute(v).ok_or_else(|| format!("bad attribute {k}: {v}"))?,
        );
    }
    Ok(())
}

/// Run one case: `Err` says what went wrong.
fn run(case: &Json) -> Result<(), String> {
    let expr = case["expr"].as_str().ok_or("no expr")?;
    let mut event = if case.get("event").is_some() {
        MapEvent::empty()
    } else {
        MapEvent::new("tck-id", "/tck/source", "tck.type")
    };
    if let Some(e) = case.get("event") {
        fill(&mut event, e)?;
    }
    if let Some(w) = case.get("with") {
        fill(&mut event, w)?;
    }
    let parsed = parse(expr);
    let expect = &case["expect"];
    if expect == "parse-error" {
        return match parsed {
            Err(_) => Ok(()),
            Ok(e) => Err(format!("parsed as {e}, a parse error was expected")),
        };
    }
    let parsed = parsed.map_err(|e| format!("does not parse: {e}"))?;
    let want = json_value(&expect["value"]).ok_or("bad expected value")?;
    let want_error = match expect.get("error") {
        None => None,
        Some(c) => {
            let c = c.as_str().ok_or("bad error class")?;
            Some(error_kind(c).ok_or_else(|| format!("unknown error class {c}"))?)
        }
    };
    let got = parsed.evaluate(&event);
    let got_error = got.error.as_ref().map(|e| e.kind());
    if got.value != want || got_error != want_error {
        return Err(format!(
            "got {} with error {:?} ({}), expected {want} with error {want_error:?}",
            got.value,
            got_error,
            got.error.map_or_else(String::new, |e| e.to_string()),
        ));
    }
    Ok(())
}

#[test]
fn every_tck_case_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tck");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/tck")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert_eq!(files.len(), TCK_SUITES, "suites in {}", dir.display());
    let mut count = 0;
    let mut failures = Vec::new();
    for file in &files {
        let suite = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let text = std::fs::read_to_string(file).expect("read suite");
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            count += 1;
            let case: Json = match serde_json::from_str(line) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{suite}:{}: not JSON: {e}", n + 1));
                    continue;
                }
            };
            let name = case["case"].as_str().unwrap_or("?").to_owned();
            if let Err(why) = run(&case) {
                failures.push(format!("{suite} / {name} [{}]: {why}", case["expr"]));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} TCK cases fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(count, TCK_CASES, "the TCK has {TCK_CASES} cases");
}
