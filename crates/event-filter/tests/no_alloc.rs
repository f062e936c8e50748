//! Evaluating the usual filters allocates nothing: a counting allocator
//! watches this thread while they run.

// The counting allocator wraps the system allocator: the one `unsafe` of
// this crate, and only in this test.
#![allow(unsafe_code)]

use event_filter::cesql::parse;
use event_filter::spec::SubscriptionsApiFilter;
use event_filter::{Filter, FilterResult, MapEvent};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;

struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    let _ = WATCHING.try_with(|w| {
        if w.get() {
            let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|a| a.set(0));
    WATCHING.with(|w| w.set(true));
    f();
    WATCHING.with(|w| w.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn usual_filters_do_not_allocate() {
    let event = MapEvent::new("42", "/shop/eu/fr", "com.example.order")
        .with("subject", "invoice.pdf")
        .with("region", "eu")
        .with("quantity", 12)
        .with("count", "12")
        .with("priority", true);
    let expressions = [
        "type = 'com.example.order' AND source LIKE '/shop/%'",
        "EXISTS quantity AND quantity > 10 AND count > 10",
        "type IN ('a', 'b', 'com.example.order') AND priority",
        "subject LIKE '%.pdf' OR NOT (region = 'eu')",
        "source LIKE '/shop/_%/fr' AND LOWER(region) = 'eu' AND TRIM(region) <> ''",
        "source LIKE '%sh_p%eu%' AND type LIKE '%example%' AND subject NOT LIKE 'x%y%z'",
        "INT(count) + quantity * 2 >= 36 AND LENGTH(subject) = 11",
        "missing = 'x'",
        "myext LIKE 'a%' OR EXISTS myext",
    ];
    for src in expressions {
        let e = parse(src).expect(src);
        let n = allocations(|| {
            let _ = std::hint::black_box(e.matches(std::hint::black_box(&event)));
        });
        assert_eq!(n, 0, "{src} allocates");
    }

    let filters: Vec<SubscriptionsApiFilter> = serde_json::from_value(serde_json::json!([
        {"exact": {"type": "com.example.order"}},
        {"prefix": {"source": "/shop/"}},
        {"suffix": {"quantity": "2"}},
        {"any": [{"exact": {"region": "us"}}, {"not": {"exact": {"priority": "false"}}}]},
        {"cesql": "quantity > 10"}
    ]))
    .expect("filters");
    let attributes = BTreeMap::from([
        ("type".to_owned(), "com.example.order".to_owned()),
        ("quantity".to_owned(), String::new()),
    ]);
    for filter in [
        Filter::compile(None, &filters).expect("filters compile"),
        Filter::compile(Some(&attributes), &[]).expect("attributes compile"),
        Filter::matches_all(),
    ] {
        let mut result = FilterResult::Fail;
        let n = allocations(|| result = filter.evaluate(std::hint::black_box(&event)));
        assert_eq!(result, FilterResult::Pass, "{filter:?}");
        assert_eq!(n, 0, "{filter:?} allocates");
    }

    // An evaluation error allocates nothing either (names are shared).
    let failing = Filter::compile(
        None,
        &serde_json::from_value::<Vec<SubscriptionsApiFilter>>(serde_json::json!([
            {"cesql": "nosuch = 'x'"}
        ]))
        .expect("filters"),
    )
    .expect("compiles");
    let mut result = FilterResult::Pass;
    let n = allocations(|| result = failing.evaluate(&event));
    assert!(matches!(result, FilterResult::Error(_)));
    assert_eq!(n, 0);
    // The counter works.
    assert!(allocations(|| drop(std::hint::black_box(vec![1u8; 8]))) > 0);
}
