//! Property tests: the parser never panics, whatever it is given; the
//! canonical form of a parsed expression parses back to the same tree;
//! evaluation never panics, over any event; the filter view agrees with
//! the evaluation.

use event_filter::cesql::{parse, Value, MAX_DEPTH};
use event_filter::{Filter, FilterResult, MapEvent, MapValue};
use proptest::prelude::*;

/// Tokens, keywords, names and a few troublemakers.
const VOCABULARY: &[&str] = &[
    "(",
    ")",
    ",",
    "+",
    "-",
    "*",
    "/",
    "%",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "AND",
    "or",
    "Xor",
    "NOT",
    "LIKE",
    "IN",
    "EXISTS",
    "TRUE",
    "false",
    "0",
    "1",
    "-1",
    "007",
    "2147483647",
    "-2147483648",
    "2147483648",
    "99999999999",
    "'abc'",
    "'a%'",
    "'_b\\_'",
    "\"x\"",
    "''",
    "'it''s'",
    "'\\\\'",
    "a",
    "b",
    "type",
    "Source",
    "myint",
    "mybool",
    "1abc",
    "LENGTH",
    "CONCAT",
    "concat_ws",
    "LOWER",
    "UPPER",
    "TRIM",
    "LEFT",
    "RIGHT",
    "SUBSTRING",
    "ABS",
    "INT",
    "BOOL",
    "STRING",
    "IS_INT",
    "IS_BOOL",
    "NOPE",
    "my_ext",
    "'",
    "\"",
    "!",
    "é",
    "\\",
    "\t",
    "\n",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(VOCABULARY), any::<bool>()), 0..40).prop_map(
        |tokens| {
            tokens
                .into_iter()
                .map(|(t, space)| if space { format!("{t} ") } else { t.to_owned() })
                .collect()
        },
    )
}

/// Expressions the grammar accepts, as text.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| if b { "TRUE" } else { "false" }.to_owned()),
        "[a-z%_\\\\' é]{0,6}"
            .prop_map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))),
        "[a-z%_ ]{0,4}".prop_map(|s| format!("\"{s}\"")),
        prop::sample::select(vec![
            "type", "source", "a", "b", "myint", "mybool", "SUBJECT", "id"
        ])
        .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(6, 64, 4, |inner| {
        let op = prop::sample::select(vec![
            "*", "/", "%", "+", "-", "=", "!=", "<>", "<", "<=", ">", ">=", "AND", "OR", "XOR",
        ]);
        let function = prop::sample::select(vec![
            "LENGTH",
            "CONCAT",
            "CONCAT_WS",
            "lower",
            "UPPER",
            "TRIM",
            "LEFT",
            "RIGHT",
            "SUBSTRING",
            "ABS",
            "INT",
            "BOOL",
            "STRING",
            "IS_INT",
            "IS_BOOL",
            "NOPE",
        ]);
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(l, op, r)| format!("{l} {op} {r}")),
            inner.clone().prop_map(|e| format!("({e})")),
            inner.clone().prop_map(|e| format!("NOT {e}")),
            inner.clone().prop_map(|e| format!("-{e}")),
            (inner.clone(), any::<bool>(), "[a-c%_\\\\]{0,5}").prop_map(|(e, not, p)| {
                let not = if not { "NOT " } else { "" };
                format!("{e} {not}LIKE '{}'", p.replace('\\', "\\\\"))
            }),
            (
                inner.clone(),
                any::<bool>(),
                prop::collection::vec(inner.clone(), 1..4)
            )
                .prop_map(|(e, not, set)| {
                    let not = if not { "NOT " } else { "" };
                    format!("{e} {not}IN ({})", set.join(", "))
                }),
            (function, prop::collection::vec(inner, 0..4))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            prop::sample::select(vec!["a", "myint", "type", "nosuch"])
                .prop_map(|n| format!("EXISTS {n}")),
        ]
    })
}

fn attribute_value() -> impl Strategy<Value = MapValue> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "abc",
            "1",
            "-5",
            "true",
            "FALSE",
            "2147483648",
            "é_%",
            " a "
        ])
        .prop_map(MapValue::from),
        any::<i64>().prop_map(MapValue::Integer),
        prop::sample::select(vec![0i64, 1, -1, i64::from(i32::MAX), i64::from(i32::MIN)])
            .prop_map(MapValue::Integer),
        any::<bool>().prop_map(MapValue::Boolean),
    ]
}

fn event() -> impl Strategy<Value = MapEvent> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "type", "source", "a", "b", "myint", "mybool", "subject",
            ]),
            attribute_value(),
        ),
        0..7,
    )
    .prop_map(|attrs| {
        let mut e = MapEvent::new("id", "/src", "t");
        for (k, v) in attrs {
            e.set(k, v);
        }
        e
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parser_never_panics_on_any_string(s in any::<String>()) {
        let _ = parse(&s);
    }

    #[test]
    fn parser_never_panics_on_token_soup(s in token_soup(), ev in event()) {
        if let Ok(e) = parse(&s) {
            let text = e.to_string();
            let again = parse(&text).map_err(|err| TestCaseError::fail(format!("{s:?} → {text:?}: {err}")))?;
            prop_assert_eq!(&again, &e);
            let _ = e.evaluate(&ev);
            let _ = e.check();
        }
    }

    #[test]
    fn canonical_form_round_trips(s in expression()) {
        let e = parse(&s).map_err(|err| TestCaseError::fail(format!("{s:?}: {err}")))?;
        let text = e.to_string();
        let again = parse(&text).map_err(|err| TestCaseError::fail(format!("{s:?} → {text:?}: {err}")))?;
        prop_assert_eq!(&again, &e, "{:?} → {:?}", s, text);
        prop_assert_eq!(again.to_string(), text);
    }

    #[test]
    fn evaluation_never_panics_and_agrees_with_matches(s in expression(), ev in event()) {
        let e = parse(&s).map_err(|err| TestCaseError::fail(format!("{s:?}: {err}")))?;
        let result = e.evaluate(&ev);
        let matched = e.matches(&ev);
        match (&result.value, &result.error) {
            (Value::Boolean(b), None) => prop_assert_eq!(matched, Ok(*b)),
            (_, Some(err)) => prop_assert_eq!(matched, Err(err.clone())),
            (_, None) => prop_assert!(matched.is_err()),
        }
        // Only an evaluation without error passes a filter, and only `true`.
        let filter = Filter::compile(None, &serde_json::from_value::<Vec<_>>(
            serde_json::json!([{ "cesql": s }]),
        ).map_err(|err| TestCaseError::fail(err.to_string()))?);
        if let Ok(filter) = filter {
            let passes = filter.evaluate(&ev) == FilterResult::Pass;
            prop_assert_eq!(passes, result == event_filter::cesql::Evaluation {
                value: Value::Boolean(true),
                error: None,
            });
        }
    }

    #[test]
    fn deep_inputs_are_refused_not_overflowed(depth in (MAX_DEPTH + 1)..5000usize, open in prop::sample::select(vec!["(", "NOT ", "-", "ABS(", "1 IN (", "a = (1 + ("])) {
        let s = open.repeat(depth);
        prop_assert!(parse(&s).is_err());
    }
}
