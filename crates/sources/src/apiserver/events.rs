//! Kubernetes object changes as CloudEvents, as Knative's ApiServerSource
//! makes them.
//!
//! - type `dev.knative.apiserver.resource.{add,update,delete}` with the
//!   whole object as JSON data (`Resource` mode), or
//!   `dev.knative.apiserver.ref.{add,update,delete}` with an
//!   `ObjectReference` (`apiVersion`, `kind`, `name`, `namespace`) as data
//!   (`Reference` mode);
//! - source: the API server's URL; subject: the object's self link as
//!   Knative writes it (`/apis/<apiVersion>/namespaces/<ns>/<plural>/<name>`,
//!   also for core `v1` kinds, the plural guessed from the kind the way
//!   Kubernetes' `UnsafeGuessKindToResource` does);
//! - extensions `kind`, `apiversion`, `name`, `namespace` (so triggers can
//!   filter on them), a fresh UUID as id, `application/json` data.

use bytes::Bytes;
use channel_core::event::Event;
pub use channel_core::sources::apiserver::EventMode;
use serde_json::{json, Value};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Update,
    Delete,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Update => "update",
            Change::Delete => "delete",
        }
    }
}

/// The CloudEvents type of `change` in `mode`.
pub fn event_type(change: Change, mode: EventMode) -> String {
    let what = match mode {
        EventMode::Reference => "ref",
        EventMode::Resource => "resource",
    };
    format!("dev.knative.apiserver.{what}.{}", change.verb())
}

/// The plural resource name Kubernetes guesses for `kind`.
pub fn guess_plural(kind: &str) -> String {
    let singular = kind.to_lowercase();
    if singular.ends_with("endpoints") {
        singular
    } else if singular.ends_with('s') {
        format!("{singular}es")
    } else if let Some(stem) = singular.strip_suffix('y') {
        format!("{stem}ies")
    } else {
        format!("{singular}s")
    }
}

/// Knative's subject: the object's self link.
pub fn self_link(api_version: &str, kind: &str, namespace: &str, name: &str) -> String {
    // A group without a version (never sent by a real API server) would
    // read as a version; Knative marks it the same way.
    let version = if api_version.contains('.') && !api_version.contains('/') {
        format!("{api_version}/versionUnknown")
    } else {
        api_version.to_owned()
    };
    format!(
        "/apis/{version}/namespaces/{namespace}/{}/{name}",
        guess_plural(kind)
    )
}

/// The event for `change` of `object` (a Kubernetes object as JSON), seen
/// by the API server at `source`.
pub fn make_event(change: Change, mode: EventMode, source: &str, object: &Value) -> Event {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let (api_version, kind) = (text("/apiVersion"), text("/kind"));
    let (name, namespace) = (text("/metadata/name"), text("/metadata/namespace"));
    let data = match mode {
        EventMode::Resource => object.clone(),
        EventMode::Reference => json!({
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "namespace": namespace,
        }),
    };
    let mut event = Event::new(
        uuid::Uuid::new_v4().to_string(),
        source,
        event_type(change, mode),
    )
    .with_data(
        "application/json",
        Bytes::from(serde_json::to_vec(&data).unwrap_or_default()),
    )
    .with_extension("kind", kind)
    .with_extension("apiversion", api_version)
    .with_extension("name", name)
    .with_extension("namespace", namespace);
    event.subject = Some(self_link(api_version, kind, namespace, name));
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_guessed_as_kubernetes_guesses_them() {
        for (kind, plural) in [
            ("Event", "events"),
            ("Pod", "pods"),
            ("Ingress", "ingresses"),
            ("NetworkPolicy", "networkpolicies"),
            ("Endpoints", "endpoints"),
            ("Revision", "revisions"),
        ] {
            assert_eq!(guess_plural(kind), plural);
        }
    }

    #[test]
    fn a_resource_event_is_knatives() {
        let object = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "ping.1", "namespace": "shop", "uid": "u"},
            "reason": "Started"});
        let e = make_event(
            Change::Add,
            EventMode::Resource,
            "https://10.96.0.1:443",
            &object,
        );
        assert_eq!(e.ty, "dev.knative.apiserver.resource.add");
        assert_eq!(e.source, "https://10.96.0.1:443");
        assert_eq!(
            e.subject.as_deref(),
            Some("/apis/v1/namespaces/shop/events/ping.1")
        );
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        let data: Value = serde_json::from_slice(e.data.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(data, object);
        for (name, value) in [
            ("kind", "Event"),
            ("apiversion", "v1"),
            ("name", "ping.1"),
            ("namespace", "shop"),
        ] {
            assert_eq!(e.extension(name).as_deref(), Some(value), "{name}");
        }
        assert!(e.validate().is_ok());
        assert_eq!(uuid::Uuid::parse_str(&e.id).map(|_| ()), Ok(()));
    }

    #[test]
    fn a_reference_event_carries_the_reference() {
        let object = json!({"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": "hello-00001", "namespace": "default"}, "spec": {"x": 1}});
        let e = make_event(Change::Delete, EventMode::Reference, "https://k", &object);
        assert_eq!(e.ty, "dev.knative.apiserver.ref.delete");
        assert_eq!(
            e.subject.as_deref(),
            Some("/apis/serving.knative.dev/v1/namespaces/default/revisions/hello-00001")
        );
        let data: Value = serde_json::from_slice(e.data.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(
            data,
            json!({"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                   "name": "hello-00001", "namespace": "default"})
        );
        assert_eq!(
            event_type(Change::Update, EventMode::Resource),
            "dev.knative.apiserver.resource.update"
        );
    }
}
