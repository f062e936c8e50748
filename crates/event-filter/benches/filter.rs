//! Filter evaluation per event: CESQL expressions typical of triggers, an
//! attributes filter, a prefix filter and the match-all case, over an
//! event shaped like the channel layer's (fixed context attributes and a
//! small map of extensions).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use event_filter::cesql::parse;
use event_filter::spec::SubscriptionsApiFilter;
use event_filter::{AttributeValue, EventAttributes, Filter};
use std::collections::BTreeMap;

enum Extension {
    String(String),
    Integer(i64),
}

struct Event {
    id: String,
    source: String,
    ty: String,
    subject: Option<String>,
    time: Option<String>,
    extensions: BTreeMap<String, Extension>,
}

impl EventAttributes for Event {
    fn attribute(&self, name: &str) -> Option<AttributeValue<'_>> {
        match name {
            "specversion" => Some(AttributeValue::String("1.0")),
            "id" => Some(AttributeValue::String(&self.id)),
            "source" => Some(AttributeValue::String(&self.source)),
            "type" => Some(AttributeValue::String(&self.ty)),
            "subject" => self.subject.as_deref().map(AttributeValue::String),
            "time" => self.time.as_deref().map(AttributeValue::String),
            _ => self.extensions.get(name).map(|v| match v {
                Extension::String(s) => AttributeValue::String(s),
                Extension::Integer(n) => AttributeValue::Integer(*n),
            }),
        }
    }
}

fn event() -> Event {
    Event {
        id: "7f1c-42".into(),
        source: "/shop/eu/fr".into(),
        ty: "com.example.order".into(),
        subject: Some("order-4711".into()),
        time: Some("2026-12-03T07:00:00Z".into()),
        extensions: BTreeMap::from([
            ("region".into(), Extension::String("eu".into())),
            ("myext".into(), Extension::Integer(12)),
            (
                "traceparent".into(),
                Extension::String("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            ),
        ]),
    }
}

fn filters(json: serde_json::Value) -> Vec<SubscriptionsApiFilter> {
    serde_json::from_value(json).expect("filters")
}

fn bench(c: &mut Criterion) {
    let e = event();

    let mut cesql = c.benchmark_group("cesql");
    for (name, src) in [
        (
            "type_eq_and_source_like",
            "type = 'com.example.order' AND source LIKE '/shop/%'",
        ),
        ("exists_and_int_compare", "EXISTS myext AND myext > 10"),
        (
            "in_set_or_suffix",
            "region IN ('us', 'ap', 'eu') OR subject LIKE '%-4711'",
        ),
        (
            "function_and_arith",
            "LOWER(region) = 'eu' AND INT(myext) * 2 + 1 >= 25",
        ),
        ("missing_attribute_error", "nosuch = 'x'"),
    ] {
        let expr = parse(src).expect(src);
        cesql.bench_function(name, |b| b.iter(|| black_box(&expr).matches(black_box(&e))));
    }
    cesql.finish();

    let mut filter = c.benchmark_group("filter");
    let attributes = BTreeMap::from([
        ("type".to_owned(), "com.example.order".to_owned()),
        ("region".to_owned(), "eu".to_owned()),
    ]);
    let cases = [
        ("attributes_2", Filter::compile(Some(&attributes), &[])),
        (
            "prefix",
            Filter::compile(
                None,
                &filters(serde_json::json!([{"prefix": {"source": "/shop/"}}])),
            ),
        ),
        (
            "cesql",
            Filter::compile(
                None,
                &filters(
                    serde_json::json!([{"cesql": "type = 'com.example.order' AND source LIKE '/shop/%'"}]),
                ),
            ),
        ),
        (
            "nested_any_not",
            Filter::compile(
                None,
                &filters(serde_json::json!([
                    {"exact": {"type": "com.example.order"}},
                    {"any": [{"suffix": {"source": "/de"}}, {"not": {"exact": {"region": "us"}}}]}
                ])),
            ),
        ),
        ("match_all", Ok(Filter::matches_all())),
    ];
    for (name, f) in cases {
        let f = f.expect(name);
        filter.bench_function(name, |b| {
            b.iter(|| {
                let f = black_box(&f);
                if f.is_match_all() {
                    true
                } else {
                    f.evaluate(black_box(&e)).passes()
                }
            })
        });
    }
    filter.finish();

    c.bench_function("cesql_parse", |b| {
        b.iter(|| {
            parse(black_box(
                "type = 'com.example.order' AND source LIKE '/shop/%'",
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
