use super::*;
use crate::cesql::ErrorKind;
use crate::spec::{source_and_type_attributes, SourceAndType, SpecErrorKind};
use crate::MapEvent;

fn event() -> MapEvent {
    MapEvent::new("id-1", "/shop/eu/fr", "com.example.order.created")
        .with("region", "eu")
        .with("quantity", 12)
        .with("priority", true)
        .with("empty", "")
        .with("datacontenttype", "application/json; charset=utf-8")
        .with("dataschema", "https://schemas.example/order")
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn filters(yaml: &str) -> Vec<SubscriptionsApiFilter> {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

fn with_filters(yaml: &str) -> Filter {
    Filter::compile(None, &filters(yaml)).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

fn passes(f: &Filter) -> bool {
    f.evaluate(&event()).passes()
}

#[test]
fn no_filter_passes_everything() {
    for f in [
        Filter::matches_all(),
        Filter::default(),
        Filter::compile(None, &[]).unwrap(),
        Filter::compile(Some(&BTreeMap::new()), &[]).unwrap(),
        with_filters("- {}\n"),
        with_filters("- all: []\n- any: []\n- not: {}\n- all: [{}]\n"),
    ] {
        assert!(f.is_match_all(), "{f:?}");
        assert_eq!(f.evaluate(&MapEvent::empty()), FilterResult::Pass);
    }
}

#[test]
fn attributes_filter() {
    let eval = |pairs: &[(&str, &str)]| {
        Filter::compile(Some(&attrs(pairs)), &[])
            .unwrap()
            .evaluate(&event())
    };
    assert_eq!(
        eval(&[("type", "com.example.order.created")]),
        FilterResult::Pass
    );
    assert_eq!(
        eval(&[("type", "com.example.order.created"), ("region", "eu")]),
        FilterResult::Pass
    );
    assert_eq!(
        eval(&[("type", "com.example.order.created"), ("region", "us")]),
        FilterResult::Fail
    );
    // Case sensitive, exact.
    assert_eq!(eval(&[("region", "EU")]), FilterResult::Fail);
    assert_eq!(eval(&[("region", "e")]), FilterResult::Fail);
    // "" matches any value of an attribute the event has...
    assert_eq!(eval(&[("region", ""), ("source", "")]), FilterResult::Pass);
    // ...but not a missing one, nor one with an empty value (Knative reads
    // a missing optional attribute as "").
    assert_eq!(eval(&[("subject", "")]), FilterResult::Fail);
    assert_eq!(eval(&[("nosuch", "")]), FilterResult::Fail);
    assert_eq!(eval(&[("empty", "")]), FilterResult::Fail);
    // A missing attribute never equals a value, even "".
    assert_eq!(eval(&[("nosuch", "x")]), FilterResult::Fail);
    // Non-string extensions compare by canonical string.
    assert_eq!(
        eval(&[("quantity", "12"), ("priority", "true")]),
        FilterResult::Pass
    );
    assert_eq!(eval(&[("quantity", "012")]), FilterResult::Fail);
    assert_eq!(eval(&[("quantity", "")]), FilterResult::Pass);
    // Knative's aliases.
    assert_eq!(
        eval(&[("schemaurl", "https://schemas.example/order")]),
        FilterResult::Pass
    );
    assert_eq!(
        eval(&[("datamediatype", "application/json")]),
        FilterResult::Pass
    );

    let bad = Filter::compile(Some(&attrs(&[("Type", "x")])), &[]).unwrap_err();
    let FilterError::Spec(e) = &bad;
    assert_eq!(e.path, "filter.attributes[Type]");
    assert_eq!(e.kind, SpecErrorKind::InvalidAttributeName);
}

#[test]
fn source_and_type_is_an_attributes_filter() {
    let f = |ty: &str, source: &str| {
        let st = SourceAndType {
            type_: ty.into(),
            source: source.into(),
        };
        Filter::compile(Some(&source_and_type_attributes(&st)), &[])
            .unwrap()
            .evaluate(&event())
    };
    assert_eq!(f("com.example.order.created", "Any"), FilterResult::Pass);
    assert_eq!(f("Any", "/shop/eu/fr"), FilterResult::Pass);
    assert_eq!(f("", ""), FilterResult::Pass);
    assert_eq!(f("Any", "/elsewhere"), FilterResult::Fail);
    assert_eq!(f("other", ""), FilterResult::Fail);
}

#[test]
fn exact_prefix_suffix() {
    assert!(passes(&with_filters(
        "- exact: {type: com.example.order.created}\n"
    )));
    assert!(!passes(&with_filters(
        "- exact: {type: com.example.order}\n"
    )));
    assert!(passes(&with_filters("- prefix: {type: com.example.}\n")));
    assert!(!passes(&with_filters("- prefix: {type: com.other.}\n")));
    assert!(passes(&with_filters("- suffix: {source: /fr}\n")));
    assert!(!passes(&with_filters("- suffix: {source: /de}\n")));
    // Several attributes: all must match.
    assert!(passes(&with_filters(
        "- exact: {region: eu, type: com.example.order.created}\n"
    )));
    assert!(!passes(&with_filters("- exact: {region: eu, type: x}\n")));
    // Missing attributes fail, with no error.
    for yaml in [
        "- exact: {nosuch: x}\n",
        "- prefix: {subject: x}\n",
        "- suffix: {nosuch: x}\n",
    ] {
        assert_eq!(
            with_filters(yaml).evaluate(&event()),
            FilterResult::Fail,
            "{yaml}"
        );
    }
    // Canonical strings of typed extensions.
    assert!(passes(&with_filters("- exact: {quantity: \"12\"}\n")));
    assert!(passes(&with_filters("- prefix: {quantity: \"1\"}\n")));
    assert!(passes(&with_filters("- suffix: {priority: ue}\n")));
    // Every filters entry must pass.
    assert!(passes(&with_filters(
        "- exact: {region: eu}\n- prefix: {source: /shop}\n"
    )));
    assert!(!passes(&with_filters(
        "- exact: {region: eu}\n- prefix: {source: /warehouse}\n"
    )));
}

#[test]
fn all_any_not() {
    assert!(passes(&with_filters(
        "- all: [{exact: {region: eu}}, {prefix: {type: com.}}]\n"
    )));
    assert!(!passes(&with_filters(
        "- all: [{exact: {region: eu}}, {prefix: {type: org.}}]\n"
    )));
    assert!(passes(&with_filters(
        "- any: [{exact: {region: us}}, {prefix: {type: com.}}]\n"
    )));
    assert!(!passes(&with_filters(
        "- any: [{exact: {region: us}}, {prefix: {type: org.}}]\n"
    )));
    assert!(passes(&with_filters("- not: {exact: {region: us}}\n")));
    assert!(!passes(&with_filters("- not: {exact: {region: eu}}\n")));
    assert!(passes(&with_filters(
        "- not: {not: {exact: {region: eu}}}\n"
    )));
    // Nesting.
    let nested = "- any:\n    - all: [{exact: {region: us}}, {cesql: \"TRUE\"}]\n    - not: {any: [{suffix: {type: .deleted}}, {exact: {priority: \"false\"}}]}\n";
    assert!(passes(&with_filters(nested)));
    // Entries with no opinion are ignored.
    assert!(passes(&with_filters(
        "- all: [{}, {exact: {region: eu}}]\n"
    )));
    assert!(!passes(&with_filters(
        "- all: [{exact: {region: us}}, {}]\n"
    )));
    assert!(passes(&with_filters(
        "- any: [{exact: {region: eu}}, {}]\n"
    )));
    assert!(!passes(&with_filters(
        "- any: [{exact: {region: us}}, {all: []}]\n"
    )));
    assert!(!passes(&with_filters(
        "- any: [{not: {}}, {exact: {region: us}}]\n"
    )));
}

#[test]
fn cesql() {
    let f = with_filters("- cesql: \"type LIKE 'com.example.%' AND quantity > 10 AND priority\"\n");
    assert!(!f.is_match_all());
    assert_eq!(f.evaluate(&event()), FilterResult::Pass);
    assert_eq!(
        with_filters("- cesql: \"quantity > 100\"\n").evaluate(&event()),
        FilterResult::Fail
    );
    // An evaluation error does not pass, and is reported.
    let missing = with_filters("- cesql: \"myext = 'x'\"\n").evaluate(&event());
    let FilterResult::Error(e) = &missing else {
        panic!("{missing:?}");
    };
    assert_eq!(e.kind(), ErrorKind::MissingAttribute);
    assert_eq!(e.to_string(), "missing attribute myext");
    assert_eq!(
        with_filters("- cesql: \"EXISTS myext AND myext = 'x'\"\n").evaluate(&event()),
        FilterResult::Fail
    );
    assert!(matches!(
        with_filters("- cesql: \"INT(region) = 1\"\n").evaluate(&event()),
        FilterResult::Error(EvalError::Cast { .. })
    ));
    // A bare non-Boolean attribute does not pass.
    assert!(matches!(
        with_filters("- cesql: \"region\"\n").evaluate(&event()),
        FilterResult::Error(EvalError::NotBoolean { .. })
    ));
    // As in Knative, `not` of a failed evaluation passes...
    assert_eq!(
        with_filters("- not: {cesql: \"myext = 'x'\"}\n").evaluate(&event()),
        FilterResult::Pass
    );
    // ...`all` stops at the first error, `any` reports one only when
    // nothing passes.
    assert!(matches!(
        with_filters("- all: [{cesql: \"myext = 'x'\"}, {exact: {region: eu}}]\n")
            .evaluate(&event()),
        FilterResult::Error(_)
    ));
    assert_eq!(
        with_filters("- any: [{cesql: \"myext = 'x'\"}, {exact: {region: eu}}]\n")
            .evaluate(&event()),
        FilterResult::Pass
    );
    assert!(matches!(
        with_filters("- any: [{exact: {region: us}}, {cesql: \"myext = 'x'\"}]\n")
            .evaluate(&event()),
        FilterResult::Error(_)
    ));
}

#[test]
fn filters_win_over_the_attributes_filter() {
    let a = attrs(&[("region", "us")]);
    let only_attributes = Filter::compile(Some(&a), &[]).unwrap();
    assert!(!passes(&only_attributes));
    let both = Filter::compile(Some(&a), &filters("- exact: {region: eu}\n")).unwrap();
    assert!(passes(&both));
    // Even an invalid attributes filter is ignored then.
    let bad = attrs(&[("Region", "us")]);
    assert!(Filter::compile(Some(&bad), &filters("- exact: {region: eu}\n")).is_ok());
    // An empty-object filters list also wins (and passes everything).
    assert!(Filter::compile(Some(&a), &filters("- {}\n"))
        .unwrap()
        .is_match_all());
}

#[test]
fn invalid_filters_do_not_compile() {
    let cases = [
        (
            "- exact: {type: a}\n  prefix: {type: b}\n",
            "filters[0]",
            None,
        ),
        ("- prefix: {type: \"\"}\n", "filters[0].prefix[type]", None),
        (
            "- any: [{suffix: {Type: x}}]\n",
            "filters[0].any[0].suffix[Type]",
            None,
        ),
        (
            "- exact: {a: b}\n- not: {cesql: \"a = \"}\n",
            "filters[1].not.cesql",
            Some(4),
        ),
        (
            "- all: [{cesql: \"NOPE(a)\"}]\n",
            "filters[0].all[0].cesql",
            Some(0),
        ),
    ];
    for (yaml, path, position) in cases {
        let FilterError::Spec(e) = Filter::compile(None, &filters(yaml)).unwrap_err();
        assert_eq!(e.path, path, "{yaml}");
        assert_eq!(e.position(), position, "{yaml}");
    }
}

#[test]
fn filters_are_shareable() {
    fn shared<T: Send + Sync + Clone + 'static>(_: &T) {}
    let f = with_filters("- cesql: \"TRUE\"\n");
    shared(&f);
    let g = f.clone();
    assert_eq!(g.evaluate(&event()), FilterResult::Pass);
}
