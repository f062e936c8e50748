//! Knative's filter spec types, as users write them, and Knative's
//! validation of them.
//!
//! ```yaml
//! filter:                       # v1 Trigger: exact attributes ("" = any value)
//!   attributes: {type: dev.knative.foo, source: ""}
//! filter:                       # the seeds' v1alpha1 Trigger
//!   sourceAndType: {type: dev.knative.foo, source: Any}
//! filters:                      # Knative's new filters (all must pass)
//!   - exact: {type: com.example.order}
//!   - any: [{prefix: {source: /eu}}, {suffix: {source: .eu}}]
//!   - not: {cesql: "EXISTS debug"}
//! ```

use crate::cesql;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `spec.filter.sourceAndType` of a v1alpha1 Trigger. An empty value, or
/// `Any` (the seeds' wildcard), matches any value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceAndType {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub source: String,
}

/// The seeds' wildcard in `sourceAndType`.
pub const ANY: &str = "Any";

/// The exact-match attributes a `sourceAndType` filter means (wildcards
/// dropped: `type` and `source` always exist).
pub fn source_and_type_attributes(st: &SourceAndType) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in [("type", &st.type_), ("source", &st.source)] {
        if !value.is_empty() && value != ANY {
            out.insert(name.to_owned(), value.clone());
        }
    }
    out
}

/// One entry of a Trigger's `spec.filters` (Knative's
/// `SubscriptionsAPIFilter`): exactly one dialect is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionsApiFilter {
    /// The attribute equals the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<BTreeMap<String, String>>,
    /// The attribute starts with the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<BTreeMap<String, String>>,
    /// The attribute ends with the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<BTreeMap<String, String>>,
    /// Every nested filter passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<SubscriptionsApiFilter>>,
    /// At least one nested filter passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<SubscriptionsApiFilter>>,
    /// The nested filter does not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<SubscriptionsApiFilter>>,
    /// A CloudEvents SQL expression that is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cesql: Option<String>,
}

/// A filter that is not valid, where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// The field, e.g. `filters[1].any[0].cesql`.
    pub path: String,
    pub message: String,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn single_attribute(
    map: &BTreeMap<String, String>,
    path: &str,
    value_required: bool,
) -> Result<(), SpecError> {
    let err = |message: String| SpecError {
        path: path.to_owned(),
        message,
    };
    if map.len() != 1 {
        return Err(err(format!(
            "exactly one attribute is expected, found {}",
            map.len()
        )));
    }
    for (name, value) in map {
        if !valid_name(name) {
            return Err(err(format!(
                "{name:?} is not a CloudEvents attribute name (lower-case letters and digits)"
            )));
        }
        if value_required && value.is_empty() {
            return Err(err(format!("the value of {name:?} must not be empty")));
        }
    }
    Ok(())
}

/// Validate one filter at `path`, as Knative's admission webhook does:
/// one dialect per entry; `exact`, `prefix` and `suffix` name exactly one
/// valid attribute (prefix and suffix with a non-empty value); nested
/// filters recursively; a CESQL expression must parse and call only
/// functions that exist (the error carries its position).
pub fn validate_filter(f: &SubscriptionsApiFilter, path: &str) -> Result<(), SpecError> {
    let set: Vec<&str> = [
        ("exact", f.exact.is_some()),
        ("prefix", f.prefix.is_some()),
        ("suffix", f.suffix.is_some()),
        ("all", f.all.is_some()),
        ("any", f.any.is_some()),
        ("not", f.not.is_some()),
        ("cesql", f.cesql.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if set.len() > 1 {
        return Err(SpecError {
            path: path.to_owned(),
            message: format!("one filter dialect per entry, found {}", set.join(", ")),
        });
    }
    if let Some(m) = &f.exact {
        single_attribute(m, &format!("{path}.exact"), false)?;
    }
    if let Some(m) = &f.prefix {
        single_attribute(m, &format!("{path}.prefix"), true)?;
    }
    if let Some(m) = &f.suffix {
        single_attribute(m, &format!("{path}.suffix"), true)?;
    }
    for (name, list) in [("all", &f.all), ("any", &f.any)] {
        if let Some(list) = list {
            for (i, nested) in list.iter().enumerate() {
                validate_filter(nested, &format!("{path}.{name}[{i}]"))?;
            }
        }
    }
    if let Some(nested) = &f.not {
        validate_filter(nested, &format!("{path}.not"))?;
    }
    if let Some(expr) = &f.cesql {
        let parsed = cesql::parse(expr).and_then(|e| e.check().map(|()| e));
        if let Err(e) = parsed {
            return Err(SpecError {
                path: format!("{path}.cesql"),
                message: format!("CESQL expression {expr:?} does not parse {e}"),
            });
        }
    }
    Ok(())
}

/// Validate a Trigger's `spec.filters` (paths `filters[i]…`).
pub fn validate_filters(filters: &[SubscriptionsApiFilter]) -> Result<(), SpecError> {
    for (i, f) in filters.iter().enumerate() {
        validate_filter(f, &format!("filters[{i}]"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(yaml: &str) -> Vec<SubscriptionsApiFilter> {
        serde_yaml_ng::from_str(yaml).expect("filters parse")
    }

    #[test]
    fn knative_yaml_round_trips() {
        let f = filters(
            "- exact: {type: a}\n- any: [{prefix: {source: /eu}}, {not: {suffix: {type: .x}}}]\n- cesql: \"EXISTS x\"\n",
        );
        assert_eq!(f.len(), 3);
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            serde_json::from_str::<Vec<SubscriptionsApiFilter>>(&json).unwrap(),
            f
        );
        assert!(validate_filters(&f).is_ok());
        assert!(
            serde_yaml_ng::from_str::<Vec<SubscriptionsApiFilter>>("- exakt: {a: b}\n").is_err()
        );
    }

    #[test]
    fn validation_names_the_field() {
        let e =
            validate_filters(&filters("- exact: {type: a}\n  prefix: {type: b}\n")).unwrap_err();
        assert_eq!(e.path, "filters[0]");
        let e = validate_filters(&filters("- exact: {type: a, source: b}\n")).unwrap_err();
        assert_eq!(e.path, "filters[0].exact");
        let e = validate_filters(&filters("- all: [{prefix: {type: \"\"}}]\n")).unwrap_err();
        assert_eq!(e.path, "filters[0].all[0].prefix");
        let e = validate_filters(&filters("- exact: {Type: a}\n")).unwrap_err();
        assert!(e.message.contains("attribute name"), "{e}");
        let e = validate_filters(&filters("- any: [{not: {cesql: \"type = 'a' AND\"}}]\n"))
            .unwrap_err();
        assert_eq!(e.path, "filters[0].any[0].not.cesql");
        assert!(e.message.contains("at position 14"), "{e}");
        let e = validate_filters(&filters("- cesql: \"NOPE(type)\"\n")).unwrap_err();
        assert!(e.message.contains("no function NOPE"), "{e}");
    }

    #[test]
    fn source_and_type_wildcards() {
        let st = SourceAndType {
            type_: "dev.knative.foo".into(),
            source: ANY.into(),
        };
        let attrs = source_and_type_attributes(&st);
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs["type"], "dev.knative.foo");
        assert!(source_and_type_attributes(&SourceAndType::default()).is_empty());
    }
}
