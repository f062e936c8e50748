//! `provisioner status` and `provisioner eventtypes`: the status server's
//! report and event registry as `kubectl get`-style tables.

use crate::registry::EventTypeObject;
use crate::standalone::StatusReport;
use crate::status::ResourceStatus;
use std::time::Duration;
use url::Url;

/// Output formats of `provisioner status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Output {
    /// A table: KIND NAMESPACE NAME READY REASON URL.
    #[default]
    Table,
    /// The server's JSON document.
    Json,
}

/// `provisioner status`: print the status of every channel and subscription.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Base URL of the provisioner's status server.
    #[arg(
        long,
        env = "KN_PROVISIONER_URL",
        default_value = "http://127.0.0.1:9090"
    )]
    pub url: Url,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Render resources as a table with aligned columns.
pub fn render(resources: &[ResourceStatus]) -> String {
    let header = ["KIND", "NAMESPACE", "NAME", "READY", "REASON", "URL"];
    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|r| {
            vec![
                r.kind.clone(),
                r.namespace.clone(),
                r.name.clone(),
                r.ready.as_str().to_owned(),
                r.reason.clone().unwrap_or_default(),
                r.url.clone().unwrap_or_default(),
            ]
        })
        .collect();
    columns(&header, &rows)
}

/// Render the event registry: what a consumer can subscribe to, and where.
pub fn render_event_types(event_types: &[EventTypeObject]) -> String {
    let header = [
        "NAMESPACE",
        "NAME",
        "TYPE",
        "SOURCE",
        "SCHEMA",
        "REFERENCE",
        "READY",
        "REASON",
    ];
    let rows: Vec<Vec<String>> = event_types
        .iter()
        .map(|e| {
            let ready = e.ready();
            vec![
                e.metadata.namespace().to_owned(),
                e.metadata.name.clone(),
                e.spec.type_.clone(),
                e.spec.source.clone().unwrap_or_default(),
                e.spec.schema.clone().unwrap_or_default(),
                e.spec
                    .reference
                    .as_ref()
                    .map(|r| format!("{}/{}", r.kind, r.name))
                    .unwrap_or_default(),
                ready.map_or("Unknown", |c| c.status.as_str()).to_owned(),
                ready.and_then(|c| c.reason.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    columns(&header, &rows)
}

fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}   ", w = *w));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Fetch the report from a running provisioner.
pub async fn fetch(url: &Url) -> anyhow::Result<StatusReport> {
    crate::cycle::get_json(
        &crate::cycle::http_client(),
        url,
        "status",
        "a provisioner status",
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e} (is the provisioner running at {url}?)"))
}

/// Run `provisioner eventtypes`.
pub async fn run_event_types(args: StatusArgs) -> anyhow::Result<()> {
    let url = crate::cycle::as_base(args.url.clone());
    let list: Vec<EventTypeObject> = crate::cycle::get_json(
        &crate::cycle::http_client(),
        &url,
        "eventtypes",
        "the event registry",
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e} (is the provisioner running at {url}?)"))?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Output::Table => print!("{}", render_event_types(&list)),
    }
    Ok(())
}

/// Run `provisioner status`.
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let report = fetch(&crate::cycle::as_base(args.url.clone())).await?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => {
            print!("{}", render(&report.resources));
            if let Some(e) = &report.last_error {
                eprintln!("\nmanifests: {e}");
            }
            for d in &report.pending_deletions {
                eprintln!(
                    "deletion pending: {} {}/{}{}",
                    d.kind,
                    d.namespace,
                    d.name,
                    d.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
            if !report.reconciled {
                eprintln!("(the provisioner has not completed a reconcile yet)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ConditionStatus;

    #[test]
    fn the_registry_lists_type_source_schema_reference_and_readiness() {
        let list: Vec<EventTypeObject> = serde_json::from_value(serde_json::json!([
            {"apiVersion": "eventing.knative.dev/v1beta2", "kind": "EventType",
             "metadata": {"name": "order", "namespace": "shop"},
             "spec": {"type": "shop.order", "source": "/shop", "schema": "https://s/order.json",
                      "reference": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"apiVersion": "eventing.knative.dev/v1beta2", "kind": "EventType",
             "metadata": {"name": "lost", "namespace": "shop"},
             "spec": {"type": "lost.event"},
             "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ReferenceNotFound"}]}}
        ]))
        .expect("objects");
        let table = render_event_types(&list);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("NAMESPACE   NAME    TYPE         SOURCE   SCHEMA"),
            "{table}"
        );
        assert!(
            lines[1].contains("shop.order")
                && lines[1].contains("Broker/default")
                && lines[1].contains("https://s/order.json"),
            "{table}"
        );
        assert!(lines[2].ends_with("False   ReferenceNotFound"), "{table}");
    }

    #[test]
    fn columns_align_and_empty_cells_stay_empty() {
        let r = |kind: &str, name: &str, ready, reason: Option<&str>, url: Option<&str>| {
            ResourceStatus {
                kind: kind.into(),
                namespace: "default".into(),
                name: name.into(),
                backend: None,
                ready,
                reason: reason.map(Into::into),
                message: None,
                url: url.map(Into::into),
                status: serde_json::Value::Null,
            }
        };
        let table = render(&[
            r(
                "Channel",
                "orders",
                ConditionStatus::True,
                None,
                Some("http://d/default/orders"),
            ),
            r(
                "Subscription",
                "audit",
                ConditionStatus::False,
                Some("ChannelNotFound"),
                None,
            ),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("KIND           NAMESPACE   NAME     READY   REASON"));
        let url_col = lines[0].find("URL").unwrap();
        assert_eq!(&lines[1][url_col..], "http://d/default/orders");
        assert!(lines[2].contains("False   ChannelNotFound"));
        assert!(!lines[2].ends_with(' '));
    }
}
