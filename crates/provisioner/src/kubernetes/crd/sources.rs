//! The event sources as custom resources: `sources.knative.dev/v1`
//! PingSource (also served as `v1beta2`), ApiServerSource, ContainerSource
//! and SinkBinding, and the seeds' `sources.eventing.knative.dev/v1alpha1`
//! CronJobSource and ApiServerSource (another API group, so CRDs of their
//! own, with the v1alpha1 fields), and `sources.knative.dev/v1alpha1`
//! GitHubSource and GitLabSource and `sources.knative.dev/v1beta1`
//! KafkaSource (also served as `v1alpha1`). All in the categories `all`,
//! `knative` and `sources`, so `kubectl get sources` lists them, with
//! Knative's columns (SINK, SCHEDULE for pings, TOPICS and
//! BOOTSTRAPSERVERS for Kafka, AGE, READY, REASON).

use crate::status::SourceStatus;
use channel_core::resources::Destination;
use channel_core::sources::apiserver::ApiServerSourceSpec as ApiServerSpec;
use channel_core::sources::container::{ContainerSourceSpec as ContainerSpec, Subject};
use channel_core::sources::github::GitHubSourceSpec as GitHubSpec;
use channel_core::sources::gitlab::GitLabSourceSpec as GitLabSpec;
use channel_core::sources::kafka::KafkaSourceSpec as KafkaSpec;
use channel_core::sources::ping::PingSourceSpec as PingSpec;
use channel_core::sources::CloudEventOverrides;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! source_kind {
    (
        $(#[$doc:meta])*
        group = $group:tt, version = $version:tt, kind = $kind:tt, root = $root:tt,
        columns = [$($column:tt),*],
        pub struct $name:ident { $($body:tt)* }
    ) => {
        $(#[$doc])*
        #[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[kube(
            group = $group,
            version = $version,
            kind = $kind,
            root = $root,
            namespaced,
            status = "SourceStatus",
            category = "all",
            category = "knative",
            category = "sources",
            label("duck.knative.dev/source", "true"),
            $(printcolumn = $column,)*
            printcolumn = r#"{"name":"Sink","type":"string","jsonPath":".status.sinkUri"}"#,
            printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
            printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
            printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
        )]
        #[serde(rename_all = "camelCase")]
        pub struct $name { $($body)* }
    };
}

source_kind! {
    /// `sources.knative.dev/v1` `PingSource`: an event on a schedule.
    group = "sources.knative.dev", version = "v1", kind = "PingSource", root = "PingSource",
    columns = [r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#],
    pub struct PingSourceSpec {
        #[serde(flatten)]
        pub spec: PingSpec,
    }
}

source_kind! {
    /// `sources.knative.dev/v1` `ApiServerSource`: changes of Kubernetes
    /// objects.
    group = "sources.knative.dev", version = "v1", kind = "ApiServerSource", root = "ApiServerSource",
    columns = [],
    pub struct ApiServerSourceSpec {
        #[serde(flatten)]
        pub spec: ApiServerSpec,
    }
}

source_kind! {
    /// `sources.knative.dev/v1` `ContainerSource`: a Deployment of the
    /// user's program, told its sink by `K_SINK`.
    group = "sources.knative.dev", version = "v1", kind = "ContainerSource", root = "ContainerSource",
    columns = [],
    pub struct ContainerSourceSpec {
        #[serde(flatten)]
        pub spec: ContainerSpec,
    }
}

source_kind! {
    /// `sources.knative.dev/v1` `SinkBinding`: `K_SINK` and
    /// `K_CE_OVERRIDES` in the pod template of its subject.
    group = "sources.knative.dev", version = "v1", kind = "SinkBinding", root = "SinkBinding",
    columns = [],
    pub struct SinkBindingSpec {
        pub subject: Subject,
        pub sink: Destination,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ce_overrides: Option<CloudEventOverrides>,
    }
}

source_kind! {
    /// The seeds' `sources.eventing.knative.dev/v1alpha1` `CronJobSource`,
    /// served as a PingSource.
    group = "sources.eventing.knative.dev", version = "v1alpha1", kind = "CronJobSource", root = "CronJobSource",
    columns = [r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#],
    pub struct CronJobSourceSpec {
        pub schedule: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub data: Option<String>,
        /// A Destination, or a bare `{apiVersion, kind, name}`.
        #[schemars(schema_with = "channel_core::resources::free_form")]
        pub sink: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub service_account_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "channel_core::resources::free_form")]
        pub resources: Option<serde_json::Value>,
    }
}

/// A v1alpha1 ApiServerSource resource entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyApiServerResource {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "channel_core::resources::free_form")]
    pub controller_selector: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "channel_core::resources::free_form")]
    pub label_selector: Option<serde_json::Value>,
}

source_kind! {
    /// The seeds' `sources.eventing.knative.dev/v1alpha1` `ApiServerSource`.
    group = "sources.eventing.knative.dev", version = "v1alpha1", kind = "ApiServerSource", root = "LegacyApiServerSource",
    columns = [],
    pub struct LegacyApiServerSourceSpec {
        /// `Ref` or `Resource`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub mode: Option<String>,
        #[serde(default)]
        pub resources: Vec<LegacyApiServerResource>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub service_account_name: Option<String>,
        #[schemars(schema_with = "channel_core::resources::free_form")]
        pub sink: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ce_overrides: Option<CloudEventOverrides>,
    }
}

source_kind! {
    /// `sources.knative.dev/v1alpha1` `GitHubSource`: GitHub webhook
    /// deliveries, received by the source adapter's webhook listener.
    group = "sources.knative.dev", version = "v1alpha1", kind = "GitHubSource", root = "GitHubSource",
    columns = [r#"{"name":"Repository","type":"string","jsonPath":".spec.ownerAndRepository"}"#],
    pub struct GitHubSourceSpec {
        #[serde(flatten)]
        pub spec: GitHubSpec,
    }
}

source_kind! {
    /// `sources.knative.dev/v1alpha1` `GitLabSource`: GitLab webhook
    /// deliveries, received by the source adapter's webhook listener.
    group = "sources.knative.dev", version = "v1alpha1", kind = "GitLabSource", root = "GitLabSource",
    columns = [r#"{"name":"Project","type":"string","jsonPath":".spec.projectUrl"}"#],
    pub struct GitLabSourceSpec {
        #[serde(flatten)]
        pub spec: GitLabSpec,
    }
}

source_kind! {
    /// `sources.knative.dev/v1beta1` `KafkaSource`: the records of Kafka
    /// topics, consumed by the source adapter.
    group = "sources.knative.dev", version = "v1beta1", kind = "KafkaSource", root = "KafkaSource",
    columns = [
        r#"{"name":"Topics","type":"string","jsonPath":".spec.topics"}"#,
        r#"{"name":"BootstrapServers","type":"string","jsonPath":".spec.bootstrapServers"}"#
    ],
    pub struct KafkaSourceSpec {
        #[serde(flatten)]
        pub spec: KafkaSpec,
    }
}
