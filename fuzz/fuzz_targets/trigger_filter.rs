//! Trigger filters: compiling any `spec.filter.attributes` and
//! `spec.filters` (exact, prefix, suffix, all, any, not, cesql) never
//! panics, compiles exactly when validation finds no problem, and the
//! compiled filter evaluates every sample event without panicking.
//!
//! Input: a JSON object `{"attributes": {...}, "filters": [...]}` (the
//! Trigger spec fields, either may be missing).

#![no_main]

use event_filter::spec::{filter_errors, SubscriptionsApiFilter};
use event_filter::Filter;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(mut spec)) = serde_json::from_slice(data) else {
        return;
    };
    let attributes: Option<BTreeMap<String, String>> = match spec.remove("attributes") {
        None => None,
        Some(v) => match serde_json::from_value(v) {
            Ok(a) => Some(a),
            Err(_) => return,
        },
    };
    let filters: Vec<SubscriptionsApiFilter> = match spec.remove("filters") {
        None => Vec::new(),
        Some(v) => match serde_json::from_value(v) {
            Ok(f) => f,
            Err(_) => return,
        },
    };
    let compiled = Filter::compile(attributes.as_ref(), &filters);
    if !filters.is_empty() {
        assert_eq!(
            compiled.is_ok(),
            filter_errors(&filters).is_empty(),
            "compile and validation disagree: {compiled:?}"
        );
    }
    let Ok(filter) = compiled else {
        return;
    };
    for event in channels_fuzz::sample_events() {
        let _ = filter.evaluate(event.as_ref());
    }
});
