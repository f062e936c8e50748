//! Unit and property tests of the CESQL parser and evaluator (the TCK is
//! in `tests/tck.rs`).

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn eval_str(expr: &str, pairs: &[(&str, &str)]) -> (Value<'static>, Vec<EvalErrorKind>) {
    let event: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let e = parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
    let out = e.evaluate(&event);
    let value = match out.value {
        Value::String(s) => Value::String(Cow::Owned(s.into_owned())),
        Value::Boolean(b) => Value::Boolean(b),
        Value::Integer(n) => Value::Integer(n),
    };
    (value, out.errors.iter().map(|e| e.kind).collect())
}

#[test]
fn precedence_follows_the_grammar() {
    // AND/OR/XOR share a level and associate to the right.
    assert_eq!(
        eval_str("FALSE AND TRUE OR TRUE", &[]).0,
        Value::Boolean(false)
    );
    assert_eq!(
        eval_str("(FALSE AND TRUE) OR TRUE", &[]).0,
        Value::Boolean(true)
    );
    assert_eq!(eval_str("1 + 2 * 3 = 7", &[]).0, Value::Boolean(true));
    assert_eq!(eval_str("10 - 2 - 3", &[]).0, Value::Integer(5));
    assert_eq!(eval_str("NOT FALSE = TRUE", &[]).0, Value::Boolean(true));
    assert_eq!(eval_str("2 - -2", &[]).0, Value::Integer(4));
    assert_eq!(eval_str("-2147483648", &[]).0, Value::Integer(i32::MIN));
}

#[test]
fn parse_errors_say_where() {
    for (expr, at) in [
        ("type = ", 7),
        ("(a", 2),
        ("a LIKE 1", 7),
        ("a IN ()", 6),
        ("2147483648", 0),
        ("EXISTS 1", 7),
        ("a b", 2),
        ("'open", 0),
    ] {
        let e = parse(expr).unwrap_err();
        assert_eq!(e.position, at, "{expr}: {e}");
    }
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
    let nots = format!("{}TRUE", "NOT ".repeat(10_000));
    assert!(parse(&nots).is_err());
}

#[test]
fn unknown_functions_parse_but_fail_the_static_check() {
    let e = parse("type = 'a' OR NOPE(1, 2)").unwrap();
    let err = e.check().unwrap_err();
    assert_eq!(err.position, 14);
    assert_eq!(eval_str("NOPE(1)", &[]).1, [EvalErrorKind::MissingFunction]);
    assert!(parse("concat_ws(',', 'a')").unwrap().check().is_ok());
}

#[test]
fn attributes_compare_without_surprises() {
    let ev = [("type", "shop.order"), ("quantity", "12"), ("flag", "TRUE")];
    assert_eq!(eval_str("quantity > 10", &ev).0, Value::Boolean(true));
    assert_eq!(eval_str("quantity = 12", &ev).0, Value::Boolean(true));
    assert_eq!(eval_str("flag = true", &ev).0, Value::Boolean(true));
    assert_eq!(
        eval_str("type LIKE 'shop._rder'", &ev).0,
        Value::Boolean(true)
    );
    assert_eq!(eval_str("EXISTS Type", &ev).0, Value::Boolean(true));
    let (v, errors) = eval_str("missing = 'x' OR type = 'shop.order'", &ev);
    assert_eq!(
        v,
        Value::Boolean(false),
        "an errored left operand zeroes OR"
    );
    assert_eq!(errors, [EvalErrorKind::MissingAttribute]);
    assert_eq!(eval_str("type + 1", &ev).1, [EvalErrorKind::Cast]);
    assert_eq!(eval_str("2147483647 + 1", &ev).1, [EvalErrorKind::Math]);
    assert_eq!(eval_str("-2147483648 / -1", &ev).1, [EvalErrorKind::Math]);
}

#[test]
fn functions() {
    assert_eq!(eval_str("UPPER('é')", &[]).0, Value::String("É".into()));
    assert_eq!(eval_str("LENGTH('héllo')", &[]).0, Value::Integer(5));
    assert_eq!(eval_str("IS_INT('12')", &[]).0, Value::Boolean(true));
    assert_eq!(eval_str("IS_BOOL('maybe')", &[]).0, Value::Boolean(false));
    assert_eq!(
        eval_str("SUBSTRING('abc', 3)", &[]).0,
        Value::String("c".into())
    );
    assert_eq!(eval_str("LENGTH(missing)", &[]).0, Value::Integer(0));
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("AND".to_owned()),
        Just("OR".to_owned()),
        Just("NOT".to_owned()),
        Just("XOR".to_owned()),
        Just("LIKE".to_owned()),
        Just("IN".to_owned()),
        Just("EXISTS".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(",".to_owned()),
        Just("=".to_owned()),
        Just("<>".to_owned()),
        Just("<=".to_owned()),
        Just("-".to_owned()),
        Just("+".to_owned()),
        Just("*".to_owned()),
        Just("/".to_owned()),
        Just("%".to_owned()),
        Just("'a%_'".to_owned()),
        Just("\"x\"".to_owned()),
        Just("type".to_owned()),
        Just("ext1".to_owned()),
        Just("CONCAT".to_owned()),
        Just("SUBSTRING".to_owned()),
        Just("ABS".to_owned()),
        Just("TRUE".to_owned()),
        "[0-9]{1,11}",
    ]
}

/// Expressions built to be valid, for round trips and evaluation.
fn expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(|n| n.to_string()),
        "[a-z ]{0,6}".prop_map(|s| format!("'{s}'")),
        Just("type".to_owned()),
        Just("n".to_owned()),
        Just("missing".to_owned()),
        Just("TRUE".to_owned()),
    ];
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                inner.clone(),
                prop::sample::select(vec![
                    "AND", "OR", "XOR", "=", "!=", "<", ">=", "+", "-", "*", "/", "%"
                ])
            )
                .prop_map(|(a, b, op)| format!("({a} {op} {b})")),
            inner.clone().prop_map(|a| format!("NOT {a}")),
            inner.clone().prop_map(|a| format!("-({a})")),
            (inner.clone(), "[a-z%_]{0,5}").prop_map(|(a, p)| format!("{a} LIKE '{p}'")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} NOT IN ({b}, 1)")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("SUBSTRING({a}, {b})")),
            inner.clone().prop_map(|a| format!("ABS({a})")),
            inner.prop_map(|a| format!("CONCAT_WS(',', {a}, LOWER({a}))")),
            Just("EXISTS type".to_owned()),
        ]
    })
}

proptest! {
    #[test]
    fn the_parser_never_panics_on_any_text(s in "\\PC{0,64}") {
        let _ = parse(&s);
    }

    #[test]
    fn the_parser_never_panics_on_token_soup(tokens in prop::collection::vec(token(), 0..24)) {
        let _ = parse(&tokens.join(" "));
    }

    #[test]
    fn display_round_trips_and_evaluation_never_panics(e in expr(), n in "[-+]?[0-9]{0,12}") {
        let parsed = parse(&e).unwrap();
        let again = parse(&parsed.to_string()).unwrap();
        prop_assert_eq!(&parsed, &again);
        let event = BTreeMap::from([
            ("type".to_owned(), "shop.order".to_owned()),
            ("n".to_owned(), n),
        ]);
        let _ = parsed.evaluate(&event);
    }
}
