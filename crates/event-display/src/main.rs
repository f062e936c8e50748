//! `event-display`: a CloudEvents sink that prints every event it receives,
//! like Knative's `event_display`, and answers as told — to show and test
//! replies, failures, retries and slow subscribers.

use bytes::Bytes;
use channel_core::event::{decode_http, encode_binary, encode_structured, Event, ExtensionValue};
use clap::{Parser, ValueEnum};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Binary,
    Structured,
}

/// Print the CloudEvents you receive; answer as told.
///
/// Every flag can also be set through the environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "event-display", version, about, long_about)]
struct Cli {
    /// Address to listen on. `PORT` (as Knative sets it) overrides the port.
    #[arg(long, env = "EVENT_DISPLAY_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Status code to answer events with (when not replying).
    #[arg(long, env = "EVENT_DISPLAY_STATUS", default_value_t = 202)]
    status: u16,

    /// Answer 200 with a reply event: the received data, a new id, the type
    /// given by --reply-type and source `event-display`.
    #[arg(long, env = "EVENT_DISPLAY_REPLY")]
    reply: bool,

    /// Type of reply events.
    #[arg(
        long,
        env = "EVENT_DISPLAY_REPLY_TYPE",
        default_value = "dev.knative.reply"
    )]
    reply_type: String,

    /// Content mode of reply events.
    #[arg(long, env = "EVENT_DISPLAY_REPLY_MODE", value_enum, default_value_t = Mode::Binary)]
    reply_mode: Mode,

    /// Transform the reply's data by appending this text: to the string
    /// field `message` of a JSON object (as Knative's sequence samples'
    /// "appender" does), else to the raw data. A step of a Sequence.
    #[arg(long, env = "EVENT_DISPLAY_REPLY_APPEND")]
    reply_append: Option<String>,

    /// Act as a Parallel branch filter: answer 200 with the received event
    /// unchanged when its type is one of these (it passes), 200 with no
    /// event otherwise (it is dropped). Repeat or comma-separate.
    #[arg(
        long,
        env = "EVENT_DISPLAY_FILTER_TYPE",
        value_delimiter = ',',
        conflicts_with = "reply"
    )]
    filter_type: Vec<String>,

    /// Wait this long before answering (e.g. `500ms`, `2s`).
    #[arg(long, env = "EVENT_DISPLAY_DELAY", value_parser = humantime::parse_duration)]
    delay: Option<Duration>,

    /// Answer 503 to the first N requests, then normally.
    #[arg(long, env = "EVENT_DISPLAY_FAIL_FIRST", default_value_t = 0)]
    fail_first: u64,

    /// Print one JSON line per event instead of the readable form.
    #[arg(long, env = "EVENT_DISPLAY_JSON")]
    json: bool,

    /// Print nothing (count only).
    #[arg(long, env = "EVENT_DISPLAY_QUIET")]
    quiet: bool,

    /// Largest accepted request body in bytes.
    #[arg(long, env = "EVENT_DISPLAY_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,

    /// Serve HTTPS with this PEM certificate chain (and `--tls-key`).
    #[arg(long, env = "EVENT_DISPLAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "EVENT_DISPLAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

/// An HTTPS acceptor for `--tls-cert` and `--tls-key`.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// The readable form, as Knative's event_display prints it.
fn pretty(event: &Event) -> String {
    let mut out = String::from("☁️  cloudevents.Event\nContext Attributes,\n");
    let _ = writeln!(out, "  specversion: {}", event.specversion);
    let _ = writeln!(out, "  type: {}", event.ty);
    let _ = writeln!(out, "  source: {}", event.source);
    let _ = writeln!(out, "  id: {}", event.id);
    for (name, value) in [
        ("time", &event.time),
        ("subject", &event.subject),
        ("dataschema", &event.dataschema),
        ("datacontenttype", &event.datacontenttype),
    ] {
        if let Some(v) = value {
            let _ = writeln!(out, "  {name}: {v}");
        }
    }
    if !event.extensions.is_empty() {
        out.push_str("Extensions,\n");
        for (name, value) in &event.extensions {
            let _ = writeln!(out, "  {name}: {value}");
        }
    }
    if let Some(data) = &event.data {
        out.push_str("Data,\n  ");
        let json = event
            .datacontenttype
            .as_deref()
            .is_none_or(|ct| ct.contains("json"));
        match std::str::from_utf8(data) {
            Ok(text) if json => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v) => out.push_str(
                    &serde_json::to_string_pretty(&v)
                        .unwrap_or_else(|_| text.to_owned())
                        .replace('\n', "\n  "),
                ),
                Err(_) => out.push_str(text),
            },
            Ok(text) => out.push_str(text),
            Err(_) => {
                let _ = write!(out, "<{} bytes of binary data>", data.len());
            }
        }
        out.push('\n');
    }
    out
}

/// One JSON line: the event in the JSON event format.
fn json_line(event: &Event) -> String {
    String::from_utf8_lossy(&channel_core::event::to_structured_json(event)).into_owned()
}

#[derive(Debug)]
struct Sink {
    cli: Cli,
    requests: AtomicU64,
}

/// `data` with `suffix` appended to its JSON `message` field when it is a
/// JSON object holding one as a string, else to the bytes themselves.
fn appended(data: &[u8], suffix: &str) -> Bytes {
    if let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(data) {
        if let Some(serde_json::Value::String(message)) = object.get_mut("message") {
            message.push_str(suffix);
            return Bytes::from(serde_json::Value::Object(object).to_string());
        }
    }
    let mut out = data.to_vec();
    out.extend_from_slice(suffix.as_bytes());
    Bytes::from(out)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

impl Sink {
    /// `200` carrying `event` in the --reply-mode content mode.
    fn answer_with(&self, event: &Event) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::new()));
        let body = match self.cli.reply_mode {
            Mode::Binary => encode_binary(event, response.headers_mut()),
            Mode::Structured => encode_structured(event, response.headers_mut()),
        };
        *response.body_mut() = Full::new(body);
        response
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() == Method::GET && req.uri().path() == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST CloudEvents here\n");
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.cli.max_body_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, format!("{e}\n")),
        };
        let event = match decode_http(&parts.headers, body) {
            Ok(event) => event,
            Err(e) => {
                if !self.cli.quiet {
                    eprintln!("request {n}: not a valid CloudEvent: {e}");
                }
                return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
            }
        };
        if !self.cli.quiet {
            let line = if self.cli.json {
                json_line(&event)
            } else {
                pretty(&event)
            };
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
        if let Some(delay) = self.cli.delay {
            tokio::time::sleep(delay).await;
        }
        if n <= self.cli.fail_first {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("failing request {n} of the first {}\n", self.cli.fail_first),
            );
        }
        if !self.cli.filter_type.is_empty() {
            if !self.cli.filter_type.contains(&event.ty) {
                return text(StatusCode::OK, Bytes::new());
            }
            return self.answer_with(&event);
        }
        if self.cli.reply {
            let mut reply = Event::new(
                format!("{}-reply", event.id),
                "event-display",
                self.cli.reply_type.clone(),
            );
            reply.datacontenttype = event.datacontenttype.clone();
            reply.data = match &self.cli.reply_append {
                Some(suffix) => Some(appended(event.data.as_deref().unwrap_or_default(), suffix)),
                None => event.data.clone(),
            };
            reply
                .extensions
                .insert("replyto".into(), ExtensionValue::String(event.id.clone()));
            return self.answer_with(&reply);
        }
        let status = StatusCode::from_u16(self.cli.status).unwrap_or(StatusCode::ACCEPTED);
        let body = if status.is_client_error() || status.is_server_error() {
            Bytes::from(format!(
                "event-display answers {} as told (--status)\n",
                status.as_u16()
            ))
        } else {
            Bytes::new()
        };
        text(status, body)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(port) = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
    {
        cli.listen.set_port(port);
    }
    if StatusCode::from_u16(cli.status).is_err() {
        anyhow::bail!("--status {} is not an HTTP status code", cli.status);
    }
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    eprintln!(
        "event-display listening on {}{}",
        listener.local_addr()?,
        if tls.is_some() { " (HTTPS)" } else { "" }
    );
    let sink = Arc::new(Sink {
        cli,
        requests: AtomicU64::new(0),
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let sink = sink.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let sink = sink.clone();
                async move { Ok::<_, std::convert::Infallible>(sink.handle(req).await) }
            });
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    Err(e) => eprintln!("TLS handshake failed: {e}"),
                },
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_to_the_message_field_or_the_raw_data() {
        assert_eq!(
            appended(br#"{"id":1,"message":"Hello"}"#, " - step 1"),
            Bytes::from_static(br#"{"id":1,"message":"Hello - step 1"}"#)
        );
        assert_eq!(appended(b"plain", "-a"), Bytes::from_static(b"plain-a"));
        assert_eq!(
            appended(br#"{"message":3}"#, "!"),
            Bytes::from_static(br#"{"message":3}!"#),
            "a message that is not a string is left alone"
        );
        assert_eq!(appended(b"", "x"), Bytes::from_static(b"x"));
    }

    #[test]
    fn prints_like_knative_event_display() {
        let e = Event::new("1", "/src", "dev.t")
            .with_data("application/json", Bytes::from_static(br#"{"a":1}"#))
            .with_extension("myext", "v");
        let out = pretty(&e);
        assert!(out.starts_with(
            "☁️  cloudevents.Event\nContext Attributes,\n  specversion: 1.0\n  type: dev.t\n"
        ));
        assert!(out.contains("Extensions,\n  myext: v\n"));
        assert!(out.contains("Data,\n  {\n    \"a\": 1\n  }"), "{out}");
        let bin = Event::new("2", "/s", "t").with_data(
            "application/octet-stream",
            Bytes::from_static(&[0xff, 0xfe]),
        );
        assert!(pretty(&bin).contains("<2 bytes of binary data>"));
    }

    #[test]
    fn json_lines_are_structured_events() {
        let e = Event::new("1", "/src", "dev.t");
        let line = json_line(&e);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["id"], "1");
    }
}
