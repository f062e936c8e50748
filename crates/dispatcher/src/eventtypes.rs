//! EventType auto-registration at ingress (Knative's
//! `eventtype-auto-create`, turned on by the contract's feature flags).
//!
//! Each broker and channel route carries a [`Seen`] set when the flag is on;
//! ingress records the `(type, source)` of every event it stored. The set
//! is bounded: once a reference holds `max_per_reference` pairs, new pairs
//! are counted (`kn_channel_eventtype_autocreate_refused_total`) and logged once,
//! never stored, so a producer sending random types cannot grow memory or
//! the registry. Recording costs one uncontended lock and two hash lookups
//! without allocation for a pair already seen, and nothing when the flag
//! is off. The control plane reads the sets from `GET /eventtypes` on the
//! admin port and creates the EventTypes.

use crate::metrics::Metrics;
use channel_core::features::{auto_event_type_name, EventTypeAutoCreate};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The broker or channel an EventType refers to (`spec.reference`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// One `(type, source)` pair observed on a reference, as served by
/// `GET /eventtypes`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// The name the EventType gets (stable: see [`auto_event_type_name`]).
    pub name: String,
    pub namespace: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub source: String,
    pub reference: Reference,
}

/// The pairs one broker or channel accepted.
#[derive(Debug)]
pub struct Seen {
    reference: Reference,
    max: usize,
    refused: Counter,
    state: Mutex<SeenState>,
}

#[derive(Debug, Default)]
struct SeenState {
    by_type: HashMap<String, HashSet<String>>,
    count: usize,
    full_logged: bool,
}

impl Seen {
    /// Record one stored event's pair.
    pub fn record(&self, ty: &str, source: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.by_type.get(ty).is_some_and(|s| s.contains(source)) {
            return;
        }
        if state.count >= self.max {
            self.refused.inc();
            if !state.full_logged {
                state.full_logged = true;
                tracing::warn!(
                    reference = %format!("{} {}/{}", self.reference.kind, self.reference.namespace, self.reference.name),
                    max = self.max,
                    r#type = ty,
                    source,
                    "EventType auto-creation: this reference reached its maximum of (type, source) pairs; further new pairs are not registered (eventtype-auto-create-max-per-reference)"
                );
            }
            return;
        }
        state
            .by_type
            .entry(ty.to_owned())
            .or_default()
            .insert(source.to_owned());
        state.count += 1;
    }

    fn observed(&self, out: &mut Vec<Observed>) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (ty, sources) in &state.by_type {
            for source in sources {
                out.push(Observed {
                    name: auto_event_type_name(
                        &self.reference.kind,
                        &self.reference.name,
                        ty,
                        source,
                    ),
                    namespace: self.reference.namespace.clone(),
                    type_: ty.clone(),
                    source: source.clone(),
                    reference: self.reference.clone(),
                });
            }
        }
    }
}

/// Every reference's set, kept across contract applies for references that
/// stay; dropped with its broker or channel, or when the flag goes off.
#[derive(Debug, Default)]
pub struct Registry {
    settings: Option<EventTypeAutoCreate>,
    seen: BTreeMap<Reference, Arc<Seen>>,
}

impl Registry {
    /// Follow the contract's flag; `live` are the references still served.
    pub fn configure(&mut self, settings: Option<EventTypeAutoCreate>, live: &HashSet<Reference>) {
        if settings != self.settings {
            // A new bound applies to sets made from now on.
            self.seen.clear();
        }
        self.settings = settings;
        self.seen.retain(|r, _| live.contains(r));
    }

    /// The set a route records into, `None` when auto-creation is off.
    pub fn route(&mut self, reference: Reference, metrics: &Metrics) -> Option<Arc<Seen>> {
        let settings = self.settings?;
        let seen = self.seen.entry(reference.clone()).or_insert_with(|| {
            Arc::new(Seen {
                refused: metrics.eventtype_refused(
                    &reference.namespace,
                    &reference.kind,
                    &reference.name,
                ),
                max: settings.max_per_reference as usize,
                reference,
                state: Mutex::default(),
            })
        });
        Some(seen.clone())
    }

    /// Every observed pair, sorted by namespace, reference, type, source.
    pub fn observed(&self) -> Vec<Observed> {
        let mut out = Vec::new();
        for seen in self.seen.values() {
            seen.observed(&mut out);
        }
        out.sort_by(|a, b| {
            (&a.namespace, &a.reference, &a.type_, &a.source).cmp(&(
                &b.namespace,
                &b.reference,
                &b.type_,
                &b.source,
            ))
        });
        out
    }

    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> Reference {
        Reference {
            api_version: "eventing.knative.dev/v1".into(),
            kind: "Broker".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn records_each_pair_once_up_to_the_bound_and_counts_the_rest() {
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        assert!(
            registry.route(reference("b"), &metrics).is_none(),
            "off by default"
        );
        registry.configure(
            Some(EventTypeAutoCreate {
                max_per_reference: 2,
            }),
            &HashSet::new(),
        );
        let seen = registry.route(reference("b"), &metrics).expect("on");
        for _ in 0..3 {
            seen.record("order", "/shop");
        }
        seen.record("order", "/shop/eu");
        seen.record("refund", "/shop");
        seen.record("random-1", "/x");
        let observed = registry.observed();
        assert_eq!(
            observed
                .iter()
                .map(|o| (o.type_.as_str(), o.source.as_str()))
                .collect::<Vec<_>>(),
            [("order", "/shop"), ("order", "/shop/eu")]
        );
        assert!(observed[0].name.starts_with("et-b-"));
        assert!(metrics
            .encode()
            .contains(r#"kn_channel_eventtype_autocreate_refused_total{namespace="shop",kind="Broker",name="b"} 2"#));
        // The same reference keeps its set across applies; a removed one loses it.
        let live: HashSet<Reference> = [reference("b")].into_iter().collect();
        registry.configure(
            Some(EventTypeAutoCreate {
                max_per_reference: 2,
            }),
            &live,
        );
        assert_eq!(registry.observed().len(), 2);
        registry.configure(
            Some(EventTypeAutoCreate {
                max_per_reference: 2,
            }),
            &HashSet::new(),
        );
        assert!(registry.observed().is_empty());
        registry.configure(None, &live);
        assert!(!registry.enabled());
        assert!(registry.route(reference("b"), &metrics).is_none());
    }
}
