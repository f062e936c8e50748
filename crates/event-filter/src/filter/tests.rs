//! Knative's filter semantics, dialect by dialect.

use super::*;
use crate::spec::SubscriptionsApiFilter;

fn event(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn filters(yaml: &str) -> Vec<SubscriptionsApiFilter> {
    serde_yaml_ng::from_str(yaml).expect("filters")
}

fn passes(f: &Filter, e: &BTreeMap<String, String>) -> bool {
    f.evaluate(e) == FilterResult::Pass
}

const ORDER: &[(&str, &str)] = &[
    ("id", "1"),
    ("source", "/shop/eu"),
    ("type", "shop.order"),
    ("region", "eu"),
];

#[test]
fn no_filter_passes_everything() {
    let f = Filter::compile(None, &[]).unwrap();
    assert!(f.is_match_all());
    assert!(passes(&f, &event(ORDER)));
    assert!(Filter::compile(Some(&BTreeMap::new()), &[])
        .unwrap()
        .is_match_all());
}

#[test]
fn attributes_exact_and_any_value() {
    let attrs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> { event(pairs) };
    let f = Filter::compile(Some(&attrs(&[("type", "shop.order"), ("region", "")])), &[]).unwrap();
    assert!(passes(&f, &event(ORDER)));
    // The extension must exist even for the any value.
    assert!(!passes(&f, &event(&[("type", "shop.order")])));
    assert!(!passes(
        &f,
        &event(&[("type", "shop.refund"), ("region", "eu")])
    ));
    // An optional context attribute counts as present (Knative).
    let f = Filter::compile(Some(&attrs(&[("subject", "")])), &[]).unwrap();
    assert!(passes(&f, &event(ORDER)));
    assert!(Filter::compile(Some(&attrs(&[("Bad", "x")])), &[]).is_err());
}

#[test]
fn new_filters_each_dialect() {
    let e = event(ORDER);
    let check = |yaml: &str, expected: bool| {
        let f = Filter::compile(None, &filters(yaml)).unwrap();
        assert_eq!(passes(&f, &e), expected, "{yaml}");
    };
    check("- exact: {type: shop.order}", true);
    check("- exact: {type: shop}", false);
    check("- exact: {missing: x}", false);
    check("- prefix: {source: /shop/}", true);
    check("- prefix: {source: /pay}", false);
    check("- suffix: {source: /eu}", true);
    check("- suffix: {missing: x}", false);
    check(
        "- all: [{exact: {type: shop.order}}, {exact: {region: eu}}]",
        true,
    );
    check(
        "- all: [{exact: {type: shop.order}}, {exact: {region: us}}]",
        false,
    );
    check(
        "- any: [{exact: {region: us}}, {exact: {region: eu}}]",
        true,
    );
    check(
        "- any: [{exact: {region: us}}, {exact: {region: fr}}]",
        false,
    );
    check("- not: {exact: {region: us}}", true);
    check("- not: {exact: {region: eu}}", false);
    check("- all: []", true);
    check("- any: []", true);
    check("- not: {all: []}", true);
    check(
        "- cesql: \"region IN ('eu', 'us') AND type LIKE 'shop.%'\"",
        true,
    );
    check("- cesql: \"region = 'us'\"", false);
    // A non-Boolean result does not pass.
    check("- cesql: \"'yes'\"", false);
    // Entries combine with AND.
    check("- exact: {type: shop.order}\n- exact: {region: us}", false);
}

#[test]
fn filters_win_over_attributes() {
    let attrs = event(&[("type", "never")]);
    let f = Filter::compile(Some(&attrs), &filters("- exact: {region: eu}")).unwrap();
    assert!(passes(&f, &event(ORDER)));
}

#[test]
fn evaluation_errors_do_not_pass_even_negated() {
    let f = Filter::compile(None, &filters("- cesql: \"missing = 'x'\"")).unwrap();
    assert!(matches!(f.evaluate(&event(ORDER)), FilterResult::Error(_)));
    let f = Filter::compile(None, &filters("- not: {cesql: \"missing = 'x'\"}")).unwrap();
    assert!(matches!(f.evaluate(&event(ORDER)), FilterResult::Error(_)));
    let f = Filter::compile(
        None,
        &filters("- any: [{cesql: \"1 / 0 = 0\"}, {exact: {region: eu}}]"),
    )
    .unwrap();
    assert!(passes(&f, &event(ORDER)), "another branch passes");
}

#[test]
fn invalid_specs_are_refused() {
    assert!(Filter::compile(None, &filters("- cesql: \"type = \"")).is_err());
    assert!(Filter::compile(None, &filters("- exact: {a: b, c: d}")).is_err());
}
