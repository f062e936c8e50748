//! The nesting limit keeps parsing, evaluation, display, comparison and
//! drop of the deepest accepted expressions well within a thread's stack
//! (half of the 2 MiB a Rust or Tokio thread gets by default, even
//! unoptimized), and deeper inputs are parse errors, not stack overflows.

use event_filter::cesql::{parse, MAX_DEPTH};
use event_filter::MapEvent;

/// Shapes of nesting: each repeated up to the limit.
fn shapes(n: usize) -> Vec<String> {
    vec![
        format!("{}1{}", "(".repeat(n), ")".repeat(n)),
        "NOT ".repeat(n) + "TRUE",
        "-".repeat(n) + "a",
        "LENGTH(".repeat(n) + "a" + &")".repeat(n),
        "CONCAT_WS(',', ".repeat(n) + "a" + &")".repeat(n),
        "SUBSTRING('abc', 1, ".repeat(n) + "1" + &")".repeat(n),
        "1 IN (".repeat(n) + "a" + &")".repeat(n),
        "a OR (".repeat(n) + "a" + &")".repeat(n),
        "a AND 1 = 1 + 1 * (".repeat(n) + "a" + &")".repeat(n),
        "a".to_owned() + &" LIKE 'a%'".repeat(n),
        "a".to_owned() + &" NOT IN (1)".repeat(n),
    ]
}

/// The deepest repetition of `shape` that parses.
fn deepest(shape: usize) -> usize {
    let mut n = 1;
    while n <= MAX_DEPTH && parse(&shapes(n + 1)[shape]).is_ok() {
        n += 1;
    }
    n
}

#[test]
fn deepest_expressions_fit_in_half_a_default_stack() {
    let count = shapes(1).len();
    let deepest: Vec<String> = (0..count).map(|i| shapes(deepest(i))[i].clone()).collect();
    let worker = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            let event = MapEvent::new("1", "/s", "t").with("a", "1");
            for src in deepest {
                let e = parse(&src).expect("parses");
                let _ = e.evaluate(&event);
                let _ = e.matches(&event);
                let text = e.to_string();
                assert_eq!(parse(&text).expect("canonical form parses"), e);
                let copy = e.clone();
                drop(copy);
                drop(e);
            }
        })
        .expect("spawn");
    worker.join().expect("no stack overflow");
}

#[test]
fn deeper_inputs_are_parse_errors() {
    for src in shapes(MAX_DEPTH + 1).into_iter().chain(shapes(100_000)) {
        let e = parse(&src).expect_err("too deep");
        assert!(e.message.contains("nests more than"), "{e}");
    }
}

#[test]
fn long_chains_do_not_nest() {
    let src = "type = 'x' OR ".repeat(20_000) + "a = '1'";
    let e = parse(&src).expect("a long chain parses");
    let event = MapEvent::new("1", "/s", "t").with("a", "1");
    assert_eq!(e.matches(&event), Ok(true));
    let set = (0..20_000)
        .map(|i| format!("'{i}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let e = parse(&format!("a IN ({set})")).expect("a long set parses");
    assert_eq!(e.matches(&event), Ok(true));
}
