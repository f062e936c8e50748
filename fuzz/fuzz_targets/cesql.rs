//! CloudEvents SQL: `cesql::parse` never panics (nor overflows the stack),
//! evaluating what it accepts never panics, and the canonical form it
//! prints (`Display`) parses back to an equal expression that evaluates to
//! the same value and error on every sample event.
//!
//! Input: a CESQL expression.

#![no_main]

use event_filter::cesql;
use event_filter::spec::parse_cesql_filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let filter = parse_cesql_filter(text);
    let Ok(expr) = cesql::parse(text) else {
        assert!(filter.is_err(), "a filter that does not parse");
        return;
    };
    let _ = expr.check();
    let _ = expr.result_type();
    let canonical = expr.to_string();
    let again = cesql::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {text:?} does not parse: {e}"));
    assert_eq!(
        again, expr,
        "canonical form {canonical:?} parses differently"
    );
    assert_eq!(again.to_string(), canonical, "canonical form is not stable");
    for event in channels_fuzz::sample_events() {
        let evaluation = expr.evaluate(event.as_ref());
        assert_eq!(
            again.evaluate(event.as_ref()),
            evaluation,
            "canonical form {canonical:?} evaluates differently"
        );
        let matches = expr.matches(event.as_ref());
        if let Ok(b) = matches {
            assert_eq!(evaluation.value, cesql::Value::Boolean(b));
        }
        if filter.is_ok() {
            let _ = filter.as_ref().map(|f| f.matches(event.as_ref()));
        }
    }
});
