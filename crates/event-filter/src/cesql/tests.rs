use super::*;
use crate::MapEvent;

fn event() -> MapEvent {
    MapEvent::new("id-1", "/shop/eu", "com.example.order")
        .with("myext", "abc")
        .with("num", "42")
        .with("count", 7)
        .with("flag", true)
        .with("big", 1i64 << 40)
}

fn eval(src: &str) -> Evaluation {
    parse(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .evaluate(&event())
}

fn value(src: &str) -> Value {
    let e = eval(src);
    assert_eq!(e.error, None, "{src}");
    e.value
}

fn error(src: &str) -> (Value, ErrorKind) {
    let e = eval(src);
    let kind = e.error.as_ref().map(EvalError::kind);
    (e.value, kind.unwrap_or_else(|| panic!("{src}: no error")))
}

fn canonical(src: &str) -> String {
    parse(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .to_string()
}

#[test]
fn precedence_and_associativity() {
    assert_eq!(canonical("1 + 2 * 3"), "1 + 2 * 3");
    assert_eq!(canonical("(1 + 2) * 3"), "(1 + 2) * 3");
    assert_eq!(canonical("1 - 2 - 3"), "1 - 2 - 3");
    assert_eq!(canonical("(1 - 2) - 3"), "(1 - 2) - 3");
    assert_eq!(canonical("a OR b AND c"), "a OR b AND c");
    assert_eq!(canonical("a OR (b AND c)"), "a OR (b AND c)");
    assert_eq!(canonical("a = 1 AND b < 2"), "a = 1 AND b < 2");
    assert_eq!(canonical("a = (1 AND b) < 2"), "a = (1 AND b) < 2");
    assert_eq!(canonical("NOT a = b"), "NOT a = b");
    assert_eq!(canonical("NOT (a = b)"), "NOT (a = b)");
    assert_eq!(canonical("NOT NOT a"), "NOT NOT a");
    assert_eq!(canonical("NOT EXISTS a"), "NOT EXISTS a");
    assert_eq!(canonical("-x LIKE '1%'"), "- x LIKE '1%'");
    assert_eq!(canonical("-(x LIKE '1%')"), "- (x LIKE '1%')");
    assert_eq!(canonical("a + b LIKE 'x'"), "a + b LIKE 'x'");
    assert_eq!(canonical("(a + b) LIKE 'x'"), "(a + b) LIKE 'x'");
    assert_eq!(
        canonical("a NOT IN (1, 2) = TRUE"),
        "a NOT IN (1, 2) = TRUE"
    );
    assert_eq!(canonical("x LIKE 'a' IN (TRUE)"), "x LIKE 'a' IN (TRUE)");
    assert_eq!(canonical("4 + -1"), "4 + -1");
    assert_eq!(canonical("--10"), "- -10");
    assert_eq!(canonical("- 10"), "- 10");
    assert_eq!(canonical("+7"), "7");
    assert_eq!(canonical("1 -1"), "1 - 1");
    assert_eq!(canonical("int(Hop) < 3"), "INT(hop) < 3");
    assert_eq!(canonical("tRuE xor FaLsE"), "TRUE XOR FALSE");
    assert_eq!(canonical("((((a))))"), "a");
    assert_eq!(canonical("CONCAT()"), "CONCAT()");
    assert_eq!(canonical("\"it's\""), r"'it\'s'");
    assert_eq!(value("TRUE OR FALSE AND FALSE"), Value::Boolean(false));
    assert_eq!(value("10 - 4 - 3"), Value::Integer(3));
    assert_eq!(value("2 * 3 % 4"), Value::Integer(2));
}

#[test]
fn parse_errors_have_positions() {
    let cases: &[(&str, usize, &str)] = &[
        ("", 0, "expected a value"),
        ("ABC(", 4, "expected a value"),
        ("type = 'a' AND (", 16, "expected a value"),
        ("(a", 2, "expected ')'"),
        ("a b", 2, "expected an operator"),
        ("x LIKE 123", 7, "must be a string literal"),
        ("x LIKE y", 7, "must be a string literal"),
        ("a IN ()", 6, "must not be empty"),
        ("a IN 1", 5, "'('"),
        ("a NOT b", 6, "LIKE or IN after NOT"),
        ("2147483648", 0, "does not fit 32 bits"),
        ("-2147483649", 0, "does not fit 32 bits"),
        ("99999999999999999999999", 0, "does not fit"),
        ("+x", 0, "sign of an integer"),
        ("EXISTS 1 + 1", 7, "attribute name after EXISTS"),
        ("EXISTS (a)", 7, "attribute name after EXISTS"),
        ("my_ext = 1", 0, "not an attribute name"),
        ("F1(2)", 0, "not a function name"),
        ("a = AND", 4, "keyword AND"),
        ("LEFT('a', 1", 11, "expected ',' or ')'"),
        ("'abc", 0, "unterminated"),
        ("a ! b", 2, "'!='"),
        ("a = é", 4, "unexpected character"),
    ];
    for (src, pos, msg) in cases {
        let e = parse(src).expect_err(src);
        assert_eq!(e.position, *pos, "{src}: {e}");
        assert!(e.message.contains(msg), "{src}: {e}");
        assert!(e.to_string().starts_with(&format!("at position {pos}: ")));
    }
    assert_eq!(value("-2147483648"), Value::Integer(i32::MIN));
    assert_eq!(value("00012"), Value::Integer(12));
}

#[test]
fn deep_nesting_is_a_parse_error() {
    for src in [
        "(".repeat(10_000),
        format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000)),
        "NOT ".repeat(10_000) + "TRUE",
        "-".repeat(10_000) + "1",
        "1".to_owned() + &" IN (1)".repeat(10_000),
        "a".to_owned() + &" LIKE 'a'".repeat(10_000),
        "(1 + ".repeat(10_000),
        "LENGTH(".repeat(10_000),
        "1 IN (".repeat(10_000),
    ] {
        let e = parse(&src).expect_err("too deep");
        assert!(e.message.contains("nests more than"), "{e}");
    }
    // Just below the limit parses and evaluates.
    let ok = format!(
        "{}1{}",
        "(".repeat(MAX_DEPTH - 1),
        ")".repeat(MAX_DEPTH - 1)
    );
    assert_eq!(value(&ok), Value::Integer(1));
    // Chains of one precedence level do not nest.
    let chain = "nope OR ".repeat(10_000) + "flag";
    let e = parse(&chain).unwrap().evaluate(&event());
    assert_eq!(e.value, Value::Boolean(false));
    assert_eq!(e.error.map(|e| e.kind()), Some(ErrorKind::MissingAttribute));
    let chain = "FALSE OR ".repeat(10_000) + "flag";
    assert_eq!(value(&chain), Value::Boolean(true));
    assert_eq!(
        value(&("1 + ".repeat(10_000) + "1")),
        Value::Integer(10_001)
    );
    let deep_not = "NOT ".repeat(MAX_DEPTH - 1) + "TRUE";
    assert_eq!(value(&deep_not), Value::Boolean((MAX_DEPTH - 1) % 2 == 0));
}

#[test]
fn attributes_and_types() {
    assert_eq!(value("type"), Value::from("com.example.order"));
    assert_eq!(value("count + 1"), Value::Integer(8));
    assert_eq!(value("num + 1"), Value::Integer(43));
    assert_eq!(value("flag AND TRUE"), Value::Boolean(true));
    assert_eq!(value("big"), Value::from("1099511627776"));
    assert_eq!(value("TYPE = 'com.example.order'"), Value::Boolean(true));
    assert_eq!(value("EXISTS myext AND EXISTS ID"), Value::Boolean(true));
    assert_eq!(value("EXISTS nope"), Value::Boolean(false));
    let empty = MapEvent::empty();
    assert_eq!(
        parse("EXISTS id").unwrap().evaluate(&empty).value,
        Value::Boolean(true)
    );
    assert_eq!(value("count = '7'"), Value::Boolean(true));
    assert_eq!(value("'7' = count"), Value::Boolean(true));
    assert_eq!(value("flag = 'TRUE'"), Value::Boolean(false));
    assert_eq!(value("'TRUE' = flag"), Value::Boolean(true));
    assert_eq!(value("1 = TRUE"), Value::Boolean(true));
    assert_eq!(value("TRUE = 1"), Value::Boolean(true));
    assert_eq!(value("5 AND TRUE"), Value::Boolean(true));
    assert_eq!(value("num > count"), Value::Boolean(true));
    assert_eq!(value("count IN ('7', 8)"), Value::Boolean(true));
    assert_eq!(value("myext NOT IN ('x', 'y')"), Value::Boolean(true));
}

#[test]
fn errors_yield_the_specified_values() {
    assert_eq!(
        error("missing"),
        (Value::Boolean(false), ErrorKind::MissingAttribute)
    );
    assert_eq!(
        error("missing + 1"),
        (Value::Integer(0), ErrorKind::MissingAttribute)
    );
    assert_eq!(
        error("UPPER(missing)"),
        (Value::from(""), ErrorKind::MissingAttribute)
    );
    assert_eq!(
        error("NOT (missing = 1)"),
        (Value::Boolean(false), ErrorKind::MissingAttribute)
    );
    assert_eq!(
        error("missing NOT LIKE 'a'"),
        (Value::Boolean(false), ErrorKind::MissingAttribute)
    );
    assert_eq!(
        error("1 NOT IN (missing)"),
        (Value::Boolean(false), ErrorKind::MissingAttribute)
    );
    assert_eq!(error("'abc' + 1"), (Value::Integer(1), ErrorKind::Cast));
    assert_eq!(error("NOT 'abc'"), (Value::Boolean(true), ErrorKind::Cast));
    assert_eq!(
        error("'x' AND TRUE"),
        (Value::Boolean(false), ErrorKind::Cast)
    );
    assert_eq!(
        error("'x' OR missing"),
        (Value::Boolean(false), ErrorKind::Cast)
    );
    assert_eq!(error("'a' < 1"), (Value::Boolean(true), ErrorKind::Cast));
    assert_eq!(
        error("1 IN ('a', 1)"),
        (Value::Boolean(true), ErrorKind::Cast)
    );
    assert_eq!(
        error("2147483647 + 1"),
        (Value::Integer(i32::MAX), ErrorKind::Math)
    );
    assert_eq!(
        error("-2147483648 - 1"),
        (Value::Integer(i32::MIN), ErrorKind::Math)
    );
    assert_eq!(
        error("-2147483648 / -1"),
        (Value::Integer(i32::MAX), ErrorKind::Math)
    );
    assert_eq!(
        error("-(-2147483648)"),
        (Value::Integer(i32::MAX), ErrorKind::Math)
    );
    assert_eq!(value("-2147483648 % -1"), Value::Integer(0));
    assert_eq!(value("-7 / 2"), Value::Integer(-3));
    assert_eq!(value("-7 % 2"), Value::Integer(-1));
    assert_eq!(value("7 % -2"), Value::Integer(1));
    assert_eq!(
        error("NOPE(1)"),
        (Value::Boolean(false), ErrorKind::MissingFunction)
    );
    assert_eq!(
        error("LEFT('a')"),
        (Value::Boolean(false), ErrorKind::MissingFunction)
    );
    assert_eq!(
        error("LENGTH(NOPE())"),
        (Value::Integer(0), ErrorKind::MissingFunction)
    );
    // The first error wins.
    assert_eq!(error("1 / 0 + missing").1, ErrorKind::Math);
    assert_eq!(error("missing + 1 / 0").1, ErrorKind::MissingAttribute);
    // Short circuit: the right operand's errors do not happen.
    assert_eq!(value("FALSE AND missing"), Value::Boolean(false));
    assert_eq!(value("TRUE OR 1 / 0 = 1"), Value::Boolean(true));
    assert_eq!(error("FALSE XOR missing").1, ErrorKind::MissingAttribute);
}

#[test]
fn functions() {
    assert_eq!(value("LENGTH('héllo')"), Value::Integer(5));
    assert_eq!(value("LENGTH(123)"), Value::Integer(3));
    assert_eq!(value("CONCAT(1, TRUE, 'x')"), Value::from("1truex"));
    assert_eq!(value("CONCAT_WS('-', 'a', 2)"), Value::from("a-2"));
    assert_eq!(value("LOWER('ÀBC')"), Value::from("àbc"));
    assert_eq!(value("UPPER('straße')"), Value::from("STRASSE"));
    assert_eq!(value("lower(myext)"), Value::from("abc"));
    assert_eq!(value("TRIM('\u{3000} a \t\n')"), Value::from("a"));
    assert_eq!(value("TRIM(CONCAT(' a ', ''))"), Value::from("a"));
    assert_eq!(value("LEFT('héllo', 2)"), Value::from("hé"));
    assert_eq!(value("RIGHT('héllo', 4)"), Value::from("éllo"));
    assert_eq!(value("RIGHT('abc', 0)"), Value::from(""));
    assert_eq!(
        error("LEFT('abc', 'x')"),
        (Value::from(""), ErrorKind::Cast)
    );
    assert_eq!(
        error("RIGHT('abc', -1)"),
        (Value::from("abc"), ErrorKind::FunctionEvaluation)
    );
    assert_eq!(value("SUBSTRING('héllo', 2, 3)"), Value::from("éll"));
    assert_eq!(value("SUBSTRING('abcdef', 6)"), Value::from("f"));
    assert_eq!(value("SUBSTRING('abcdef', -6)"), Value::from("abcdef"));
    assert_eq!(value("SUBSTRING('abcdef', -2, 10)"), Value::from("ef"));
    assert_eq!(value("SUBSTRING('abcdef', 3, 0)"), Value::from(""));
    assert_eq!(value("SUBSTRING('', 0)"), Value::from(""));
    assert_eq!(
        error("SUBSTRING('', 1)"),
        (Value::from(""), ErrorKind::FunctionEvaluation)
    );
    assert_eq!(
        error("SUBSTRING('abc', 1, -1)"),
        (Value::from(""), ErrorKind::FunctionEvaluation)
    );
    assert_eq!(value("ABS(-5) + ABS(5)"), Value::Integer(10));
    assert_eq!(value("INT('+5') + INT(TRUE)"), Value::Integer(6));
    assert_eq!(value("BOOL('FaLsE')"), Value::Boolean(false));
    assert_eq!(value("STRING(-5)"), Value::from("-5"));
    assert_eq!(
        value("IS_INT('-12') AND NOT IS_INT('1.5') AND IS_INT(3)"),
        Value::Boolean(true)
    );
    assert_eq!(
        value("IS_BOOL('True') AND NOT IS_BOOL(1) AND IS_BOOL(FALSE)"),
        Value::Boolean(true)
    );
    assert_eq!(error("IS_STRING('x')").1, ErrorKind::MissingFunction);
}

#[test]
fn like_through_the_language() {
    assert_eq!(value("source LIKE '/shop/%'"), Value::Boolean(true));
    assert_eq!(value("source NOT LIKE '/shop/%'"), Value::Boolean(false));
    assert_eq!(value("count LIKE '_'"), Value::Boolean(true));
    assert_eq!(value(r"'a%' LIKE 'a\%'"), Value::Boolean(true));
    assert_eq!(value(r"'ab' LIKE 'a\%'"), Value::Boolean(false));
    assert_eq!(value(r"'a\\' LIKE 'a\\\\'"), Value::Boolean(true));
    assert_eq!(value(r"'a\\' LIKE 'a\\'"), Value::Boolean(true));
    assert_eq!(value(r#"'it''s' LIKE "it's""#), Value::Boolean(true));
}

#[test]
fn static_check() {
    let e = parse("type = 'a' AND NOPE(type) OR LEFT('a')").unwrap();
    let err = e.check().unwrap_err();
    assert_eq!(err.position, 15);
    assert!(err.message.contains("no function NOPE"), "{err}");
    let err = parse("LEFT('a')").unwrap().check().unwrap_err();
    assert!(
        err.message.contains("LEFT takes 2 arguments, not 1"),
        "{err}"
    );
    let err = parse("CONCAT_WS()").unwrap().check().unwrap_err();
    assert!(err.message.contains("one or more"), "{err}");
    assert!(parse("concat_ws(',') = ''").unwrap().check().is_ok());
    assert_eq!(parse("1 + 1").unwrap().result_type(), Some(Type::Integer));
    assert_eq!(parse("a").unwrap().result_type(), None);
    assert_eq!(parse("NOPE()").unwrap().result_type(), Some(Type::Boolean));
}

#[test]
fn matches_is_the_filter_view() {
    let ev = event();
    assert_eq!(
        parse("type = 'com.example.order'").unwrap().matches(&ev),
        Ok(true)
    );
    assert_eq!(parse("type = 'x'").unwrap().matches(&ev), Ok(false));
    assert_eq!(
        parse("count + 1").unwrap().matches(&ev),
        Err(EvalError::NotBoolean {
            found: Type::Integer
        })
    );
    assert_eq!(
        parse("missing = 1").unwrap().matches(&ev),
        Err(EvalError::MissingAttribute {
            name: "missing".into()
        })
    );
    assert_eq!(parse("flag").unwrap().matches(&ev), Ok(true));
}

#[test]
fn expression_api() {
    let e: Expression = "a=1".parse().unwrap();
    assert_eq!(e.source(), "a=1");
    assert_eq!(e, parse("(A = 1)").unwrap());
    assert_ne!(e, parse("a = 2").unwrap());
    assert!(matches!(e.ast(), Expr::Binary { rest, .. } if rest[0].0 == BinaryOp::Eq));
    fn shared<T: Send + Sync + 'static>(_: &T) {}
    shared(&e);
}
