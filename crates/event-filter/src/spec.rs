//! Knative's filter spec types, as users write them, and Knative's
//! validation of them (`pkg/apis/eventing/v1/trigger_validation.go`).
//!
//! ```yaml
//! filter:                       # v1 Trigger: exact attributes ("" = any value)
//!   attributes: {type: dev.knative.foo, source: ""}
//! filter:                       # v1alpha1 Trigger
//!   sourceAndType: {type: dev.knative.foo, source: ""}
//! filters:                      # Knative's new filters (all must pass)
//!   - exact: {type: com.example.order}
//!   - any: [{prefix: {source: /eu}}, {suffix: {source: .eu}}]
//!   - not: {cesql: "EXISTS debug"}
//! ```
//!
//! The validation rules, as Knative's webhook applies them, plus the ones
//! its API documents but only its data plane enforces:
//!
//! * one filter object sets at most one dialect (an empty map, list or
//!   string counts as not set, as in Knative);
//! * attribute names (in `filter.attributes`, `exact`, `prefix`, `suffix`)
//!   start with a letter and hold only lower-case letters and digits;
//!   `exact`, `prefix` and `suffix` may name several attributes (all must
//!   match), as Knative accepts;
//! * the values of `exact`, `prefix` and `suffix` are not empty (Knative's
//!   API says they MUST NOT be; its webhook lets them through and its data
//!   plane then silently drops the filter — refusing them is safer);
//! * a `cesql` expression parses, calls only functions that exist with the
//!   right number of arguments, and does not always yield a non-Boolean
//!   (the error carries the position in the expression);
//! * `all`, `any` and `not` are checked recursively.

use crate::cesql::{self, Type};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Knative's `spec.filter` of a v1 Trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerFilter {
    /// Exact match on context attributes and extensions: an event passes
    /// when every listed attribute exists and equals the value; an empty
    /// value matches any non-empty value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// `spec.filter.sourceAndType` of a v1alpha1 Trigger: exact `type` and
/// `source`. An empty value — or `Any`, the wildcard of Knative's first
/// releases (until March 2019) — matches any value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceAndType {
    /// The event type, `""` or `Any` for any.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// The event source, `""` or `Any` for any.
    #[serde(default)]
    pub source: String,
}

/// The wildcard of `sourceAndType` in Knative's first releases.
pub const ANY: &str = "Any";

/// The attributes filter a `sourceAndType` filter means, as Knative's
/// v1alpha1 to v1beta1 conversion wrote it: both `type` and `source`, the
/// wildcards as `""` (which, on these required attributes, matches every
/// event).
pub fn source_and_type_attributes(st: &SourceAndType) -> BTreeMap<String, String> {
    let value = |v: &str| {
        if v == ANY {
            String::new()
        } else {
            v.to_owned()
        }
    };
    BTreeMap::from([
        ("source".to_owned(), value(&st.source)),
        ("type".to_owned(), value(&st.type_)),
    ])
}

impl From<&SourceAndType> for TriggerFilter {
    fn from(st: &SourceAndType) -> Self {
        TriggerFilter {
            attributes: source_and_type_attributes(st),
        }
    }
}

/// One entry of a Trigger's `spec.filters` (Knative's
/// `SubscriptionsAPIFilter`): at most one dialect is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionsApiFilter {
    /// Every nested filter passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<SubscriptionsApiFilter>,
    /// At least one nested filter passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<SubscriptionsApiFilter>,
    /// The nested filter does not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<SubscriptionsApiFilter>>,
    /// Each attribute equals its value (case sensitive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exact: BTreeMap<String, String>,
    /// Each attribute starts with its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefix: BTreeMap<String, String>,
    /// Each attribute ends with its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub suffix: BTreeMap<String, String>,
    /// A CloudEvents SQL expression that is true.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cesql: String,
}

impl SubscriptionsApiFilter {
    /// The dialects this filter sets, in Knative's order.
    pub fn dialects(&self) -> Vec<&'static str> {
        [
            ("exact", !self.exact.is_empty()),
            ("prefix", !self.prefix.is_empty()),
            ("suffix", !self.suffix.is_empty()),
            ("all", !self.all.is_empty()),
            ("any", !self.any.is_empty()),
            ("not", self.not.is_some()),
            ("cesql", !self.cesql.is_empty()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Why a filter spec is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecErrorKind {
    /// A filter object sets several dialects.
    MultipleDialects,
    /// An attribute name is not lower-case letters and digits starting
    /// with a letter.
    InvalidAttributeName,
    /// An `exact`, `prefix` or `suffix` value is empty.
    EmptyValue,
    /// The CESQL expression does not parse.
    CesqlSyntax(cesql::ParseError),
    /// The CESQL expression parses but fails on every event (unknown
    /// function, wrong number of arguments, non-Boolean result).
    CesqlStatic(cesql::StaticError),
}

/// A filter spec that is not valid: where (the field path, e.g.
/// `filters[1].any[0].cesql`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// The field, relative to the Trigger's `spec`.
    pub path: String,
    /// What is wrong, for people.
    pub message: String,
    /// What is wrong, for programs.
    pub kind: SpecErrorKind,
}

impl SpecError {
    fn new(path: String, kind: SpecErrorKind, message: String) -> SpecError {
        SpecError {
            path,
            message,
            kind,
        }
    }

    /// For a CESQL error, the byte offset in the expression.
    pub fn position(&self) -> Option<usize> {
        match &self.kind {
            SpecErrorKind::CesqlSyntax(e) => Some(e.position),
            SpecErrorKind::CesqlStatic(e) => Some(e.position),
            _ => None,
        }
    }
}

/// `^[a-z][a-z0-9]*$`, Knative's rule for attribute names in filters.
pub fn is_valid_attribute_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn check_names(
    map: &BTreeMap<String, String>,
    path: &str,
    values_required: bool,
    out: &mut Vec<SpecError>,
) {
    for (name, value) in map {
        let at = format!("{path}[{name}]");
        if !is_valid_attribute_name(name) {
            out.push(SpecError::new(
                at,
                SpecErrorKind::InvalidAttributeName,
                format!("{name:?} is not a valid attribute name: it must start with a letter and hold only lower-case letters and digits"),
            ));
        } else if values_required && value.is_empty() {
            out.push(SpecError::new(
                at,
                SpecErrorKind::EmptyValue,
                format!("the value for attribute {name:?} must not be empty"),
            ));
        }
    }
}

/// Every problem of `spec.filter.attributes` (paths
/// `filter.attributes[name]`).
pub fn attribute_errors(attributes: &BTreeMap<String, String>) -> Vec<SpecError> {
    let mut out = Vec::new();
    check_names(attributes, "filter.attributes", false, &mut out);
    out
}

/// Validate `spec.filter.attributes`: the first problem.
pub fn validate_attributes(attributes: &BTreeMap<String, String>) -> Result<(), SpecError> {
    first(attribute_errors(attributes))
}

/// Parse and check a CESQL expression as a filter: it must parse, pass
/// [`cesql::Expression::check`] and may not always yield an Integer or a
/// String.
pub fn parse_cesql_filter(expr: &str) -> Result<cesql::Expression, SpecErrorKind> {
    let parsed = cesql::parse(expr).map_err(SpecErrorKind::CesqlSyntax)?;
    parsed.check().map_err(SpecErrorKind::CesqlStatic)?;
    match parsed.result_type() {
        Some(ty @ (Type::Integer | Type::String)) => {
            Err(SpecErrorKind::CesqlStatic(cesql::StaticError::new(
                expr,
                0,
                format!("the expression yields {ty}, a filter needs a Boolean"),
            )))
        }
        _ => Ok(parsed),
    }
}

fn check_filter(f: &SubscriptionsApiFilter, path: &str, out: &mut Vec<SpecError>) {
    let dialects = f.dialects();
    if dialects.len() > 1 {
        out.push(SpecError::new(
            path.to_owned(),
            SpecErrorKind::MultipleDialects,
            format!(
                "multiple dialects found ({}), filters can have only one dialect set",
                dialects.join(", ")
            ),
        ));
    }
    check_names(&f.exact, &format!("{path}.exact"), true, out);
    check_names(&f.prefix, &format!("{path}.prefix"), true, out);
    check_names(&f.suffix, &format!("{path}.suffix"), true, out);
    for (i, nested) in f.all.iter().enumerate() {
        check_filter(nested, &format!("{path}.all[{i}]"), out);
    }
    for (i, nested) in f.any.iter().enumerate() {
        check_filter(nested, &format!("{path}.any[{i}]"), out);
    }
    if let Some(nested) = &f.not {
        check_filter(nested, &format!("{path}.not"), out);
    }
    if !f.cesql.is_empty() {
        if let Err(kind) = parse_cesql_filter(&f.cesql) {
            let detail = match &kind {
                SpecErrorKind::CesqlSyntax(e) => e.to_string(),
                SpecErrorKind::CesqlStatic(e) => e.to_string(),
                _ => String::new(),
            };
            out.push(SpecError::new(
                format!("{path}.cesql"),
                kind,
                format!("invalid CESQL expression {:?}: {detail}", f.cesql),
            ));
        }
    }
}

/// Every problem of a Trigger's `spec.filters` (paths `filters[i]…`).
pub fn filter_errors(filters: &[SubscriptionsApiFilter]) -> Vec<SpecError> {
    let mut out = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        check_filter(f, &format!("filters[{i}]"), &mut out);
    }
    out
}

/// Validate a Trigger's `spec.filters`: the first problem.
pub fn validate_filters(filters: &[SubscriptionsApiFilter]) -> Result<(), SpecError> {
    first(filter_errors(filters))
}

/// Validate one filter object whose field path is `path`.
pub fn validate_filter(filter: &SubscriptionsApiFilter, path: &str) -> Result<(), SpecError> {
    let mut out = Vec::new();
    check_filter(filter, path, &mut out);
    first(out)
}

fn first(errors: Vec<SpecError>) -> Result<(), SpecError> {
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(yaml: &str) -> Vec<SubscriptionsApiFilter> {
        serde_yaml_ng::from_str(yaml).expect("filters parse")
    }

    #[test]
    fn knative_yaml_reads_and_writes_back() {
        let yaml = r#"
- exact:
    type: com.example.order
- prefix: {source: /shop/}
- suffix: {subject: .pdf}
- any:
    - exact: {region: eu}
    - not:
        cesql: "region = 'us' OR EXISTS debug"
- all: [{exact: {a: b, c: d}}, {cesql: "TRUE"}]
"#;
        let f = filters(yaml);
        assert_eq!(f.len(), 5);
        assert_eq!(f[0].exact["type"], "com.example.order");
        assert_eq!(f[3].any.len(), 2);
        assert_eq!(
            f[3].any[1].not.as_ref().map(|n| n.cesql.as_str()),
            Some("region = 'us' OR EXISTS debug")
        );
        assert!(validate_filters(&f).is_ok());
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(
            json[0],
            serde_json::json!({"exact": {"type": "com.example.order"}})
        );
        assert_eq!(
            json[3]["any"][1],
            serde_json::json!({"not": {"cesql": "region = 'us' OR EXISTS debug"}})
        );
        assert_eq!(
            serde_json::from_value::<Vec<SubscriptionsApiFilter>>(json).unwrap(),
            f
        );
        assert!(
            serde_yaml_ng::from_str::<Vec<SubscriptionsApiFilter>>("- exakt: {a: b}\n").is_err()
        );
        let tf: TriggerFilter =
            serde_json::from_str(r#"{"attributes": {"type": "a", "source": ""}}"#).unwrap();
        assert_eq!(tf.attributes.len(), 2);
        assert_eq!(
            serde_json::from_str::<TriggerFilter>("{}").unwrap(),
            TriggerFilter::default()
        );
        assert_eq!(
            serde_json::to_string(&TriggerFilter::default()).unwrap(),
            "{}"
        );
        let st: SourceAndType = serde_json::from_str(r#"{"type": "t"}"#).unwrap();
        assert_eq!(st.source, "");
    }

    #[test]
    fn validation_names_the_field() {
        let e =
            validate_filters(&filters("- exact: {type: a}\n  prefix: {type: b}\n")).unwrap_err();
        assert_eq!(e.path, "filters[0]");
        assert_eq!(e.kind, SpecErrorKind::MultipleDialects);
        assert!(e.message.contains("exact, prefix"), "{e}");

        let e = validate_filters(&filters(
            "- {}\n- all: [{exact: {a: x}}, {prefix: {type: \"\"}}]\n",
        ))
        .unwrap_err();
        assert_eq!(e.path, "filters[1].all[1].prefix[type]");
        assert_eq!(e.kind, SpecErrorKind::EmptyValue);

        let e = validate_filters(&filters("- suffix: {invALID: abc}\n")).unwrap_err();
        assert_eq!(e.path, "filters[0].suffix[invALID]");
        assert_eq!(e.kind, SpecErrorKind::InvalidAttributeName);
        let e = validate_filters(&filters("- exact: {1abc: x}\n")).unwrap_err();
        assert_eq!(e.kind, SpecErrorKind::InvalidAttributeName);

        let e = validate_filters(&filters(
            "- exact: {a: b}\n- any: [{not: {cesql: \"type = 'a' AND\"}}]\n",
        ))
        .unwrap_err();
        assert_eq!(e.path, "filters[1].any[0].not.cesql");
        assert_eq!(e.position(), Some(14));
        assert!(e.message.contains("at position 14"), "{e}");
        assert!(
            e.to_string().starts_with("filters[1].any[0].not.cesql: "),
            "{e}"
        );

        let e = validate_filters(&filters("- cesql: \"EXISTS a AND NOPE(type)\"\n")).unwrap_err();
        assert_eq!(e.position(), Some(13));
        assert!(e.message.contains("no function NOPE"), "{e}");
        let e = validate_filters(&filters("- cesql: \"LENGTH(type)\"\n")).unwrap_err();
        assert!(e.message.contains("yields Integer"), "{e}");
        assert!(validate_filters(&filters("- cesql: \"myflag\"\n")).is_ok());

        // Several attributes in exact/prefix/suffix, empty entries and empty
        // lists are accepted, as Knative's webhook does.
        assert!(validate_filters(&filters(
            "- exact: {a: b, c: d}\n- {}\n- all: []\n- not: {}\n"
        ))
        .is_ok());

        // All the errors, not just the first.
        let all = filter_errors(&filters(
            "- exact: {A: b}\n- prefix: {x: \"\"}\n  cesql: \"(\"\n",
        ));
        let paths: Vec<&str> = all.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "filters[0].exact[A]",
                "filters[1]",
                "filters[1].prefix[x]",
                "filters[1].cesql"
            ]
        );
    }

    #[test]
    fn attributes_validation() {
        let ok = BTreeMap::from([
            ("type".to_owned(), String::new()),
            ("x1".to_owned(), "v".to_owned()),
        ]);
        assert!(validate_attributes(&ok).is_ok());
        let bad = BTreeMap::from([("Type".to_owned(), "v".to_owned())]);
        let e = validate_attributes(&bad).unwrap_err();
        assert_eq!(e.path, "filter.attributes[Type]");
    }

    #[test]
    fn source_and_type_wildcards() {
        let st = SourceAndType {
            type_: "dev.knative.foo".into(),
            source: ANY.into(),
        };
        let attrs = source_and_type_attributes(&st);
        assert_eq!(attrs["type"], "dev.knative.foo");
        assert_eq!(attrs["source"], "");
        let any = source_and_type_attributes(&SourceAndType::default());
        assert!(any.values().all(String::is_empty));
        assert_eq!(TriggerFilter::from(&st).attributes, attrs);
    }
}
