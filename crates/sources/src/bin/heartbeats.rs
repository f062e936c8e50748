//! `heartbeats`: a small event producer for ContainerSources and
//! SinkBindings, like Knative's sample of the same name. It reads the
//! runtime contract Knative gives such programs — `K_SINK` (where to send)
//! and `K_CE_OVERRIDES` (`{"extensions": {...}}`) — and posts a
//! `dev.knative.eventing.samples.heartbeat` event every `--period`, with
//! data `{"id": <n>, "label": <label>}`, from
//! `https://knative.dev/eventing/cmd/heartbeats/#<namespace>/<pod>`
//! (`POD_NAMESPACE`, `POD_NAME`). A failed send is logged and the next beat
//! goes on; `--count` stops after that many beats.

use bytes::Bytes;
use channel_core::event::encode_binary;
use channel_core::event::Event;
use clap::Parser;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "heartbeats",
    version,
    about = "Posts a heartbeat CloudEvent to $K_SINK every --period"
)]
struct Cli {
    /// Time between beats.
    #[arg(long, env = "PERIOD", default_value = "5s", value_parser = humantime::parse_duration)]
    period: Duration,
    /// The `label` of every beat's data.
    #[arg(long, env = "LABEL", default_value = "")]
    label: String,
    /// Stop after this many beats (0: never).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Where to send (Knative's runtime contract).
    #[arg(long, env = "K_SINK")]
    sink: String,
    /// `{"extensions": {...}}` set on every beat.
    #[arg(long, env = "K_CE_OVERRIDES")]
    ce_overrides: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Overrides {
    #[serde(default)]
    extensions: BTreeMap<String, String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sink: http::Uri = cli
        .sink
        .parse()
        .map_err(|e| anyhow::anyhow!("K_SINK {:?} is not a URL: {e}", cli.sink))?;
    let extensions = match &cli.ce_overrides {
        None => BTreeMap::new(),
        Some(text) if text.trim().is_empty() => BTreeMap::new(),
        Some(text) => {
            serde_json::from_str::<Overrides>(text)
                .map_err(|e| {
                    anyhow::anyhow!("K_CE_OVERRIDES is not {{\"extensions\": {{...}}}}: {e}")
                })?
                .extensions
        }
    };
    let source = format!(
        "https://knative.dev/eventing/cmd/heartbeats/#{}/{}",
        std::env::var("POD_NAMESPACE").unwrap_or_default(),
        std::env::var("POD_NAME").unwrap_or_else(|_| "local".into())
    );
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut beat = 0u64;
    loop {
        beat += 1;
        let mut event = Event::new(
            uuid::Uuid::new_v4().to_string(),
            source.clone(),
            "dev.knative.eventing.samples.heartbeat",
        )
        .with_data(
            "application/json",
            serde_json::to_vec(&serde_json::json!({"id": beat, "label": cli.label}))?,
        );
        event.time = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        for (name, value) in &extensions {
            event = event.with_extension(name, value.as_str());
        }
        let mut request = http::Request::post(sink.clone());
        let body = encode_binary(&event, request.headers_mut().expect("a fresh request"));
        let sent = client.request(request.body(Full::new(body))?).await;
        match sent {
            Ok(r) if r.status().is_success() => eprintln!("beat {beat} sent ({})", r.status()),
            Ok(r) => eprintln!("beat {beat} refused by {sink}: {}", r.status()),
            Err(e) => eprintln!("beat {beat} not sent to {sink}: {e}"),
        }
        if cli.count != 0 && beat >= cli.count {
            return Ok(());
        }
        tokio::time::sleep(cli.period).await;
    }
}
