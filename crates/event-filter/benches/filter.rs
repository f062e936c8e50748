//! Filter evaluation per event: CESQL expressions typical of triggers, the
//! attributes filter, a prefix filter and the match-all case.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use event_filter::cesql::parse;
use event_filter::spec::SubscriptionsApiFilter;
use event_filter::Filter;
use std::collections::BTreeMap;

fn event() -> BTreeMap<String, String> {
    [
        ("specversion", "1.0"),
        ("id", "7f1c-42"),
        ("source", "/shop/eu/fr"),
        ("type", "com.example.shop.order.created"),
        ("subject", "order-4711"),
        ("region", "eu"),
        ("quantity", "12"),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn bench(c: &mut Criterion) {
    let e = event();
    for (name, expr) in [
        ("cesql_equal", "type = 'com.example.shop.order.created'"),
        ("cesql_like_and_exists", "type LIKE 'com.example.shop.%' AND EXISTS region"),
        ("cesql_in_and_int", "region IN ('eu', 'us', 'ap') AND quantity >= 10"),
        (
            "cesql_dnf",
            "(source LIKE '/shop/eu/%' AND subject LIKE 'order-%') OR (type = 'x' AND region = 'us')",
        ),
    ] {
        let parsed = parse(expr).expect("parses");
        c.bench_function(name, |b| b.iter(|| black_box(parsed.matches(black_box(&e)))));
    }
    let attrs: BTreeMap<String, String> =
        [("type", "com.example.shop.order.created"), ("region", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let f = Filter::compile(Some(&attrs), &[]).expect("compiles");
    c.bench_function("attributes_2", |b| {
        b.iter(|| black_box(f.evaluate(black_box(&e))))
    });
    let prefix: Vec<SubscriptionsApiFilter> =
        serde_yaml_ng::from_str("- prefix: {source: /shop/eu}").expect("yaml");
    let f = Filter::compile(None, &prefix).expect("compiles");
    c.bench_function("prefix", |b| {
        b.iter(|| black_box(f.evaluate(black_box(&e))))
    });
    let f = Filter::matches_all();
    c.bench_function("match_all", |b| {
        b.iter(|| black_box(f.evaluate(black_box(&e))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
