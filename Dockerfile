# Images of the channel binaries, one target each:
#
#   docker build --target inmemory-dispatcher -t knative-rs/inmemory-dispatcher .
#   docker build --target kafka-dispatcher    -t knative-rs/kafka-dispatcher .
#   docker build --target nats-dispatcher     -t knative-rs/nats-dispatcher .
#   docker build --target provisioner         -t knative-rs/provisioner .
#   docker build --target event-display       -t knative-rs/event-display .
#
# One builder stage compiles the whole workspace once (release, fat LTO);
# each final image is Debian slim with only the C libraries the binaries
# link (OpenSSL for rdkafka's TLS/SASL), one binary, and a non-root user.

FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p channel-inmemory -p channel-kafka -p channel-nats -p provisioner -p event-display \
 && mkdir -p /out \
 && cp target/release/inmemory-dispatcher target/release/kafka-dispatcher \
       target/release/nats-dispatcher target/release/provisioner \
       target/release/event-display /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin nonroot
USER 65532:65532

FROM runtime AS inmemory-dispatcher
COPY --from=builder /out/inmemory-dispatcher /usr/local/bin/
# Logs as JSON lines, for collectors.
ENV KN_CHANNEL_LOG_FORMAT=json
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/inmemory-dispatcher"]

FROM runtime AS kafka-dispatcher
COPY --from=builder /out/kafka-dispatcher /usr/local/bin/
# Logs as JSON lines, for collectors.
ENV KN_CHANNEL_LOG_FORMAT=json
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/kafka-dispatcher"]

FROM runtime AS nats-dispatcher
COPY --from=builder /out/nats-dispatcher /usr/local/bin/
# Logs as JSON lines, for collectors.
ENV KN_CHANNEL_LOG_FORMAT=json
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/nats-dispatcher"]

FROM runtime AS provisioner
COPY --from=builder /out/provisioner /usr/local/bin/
# Logs as JSON lines, for collectors.
ENV KN_CHANNEL_LOG_FORMAT=json
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/provisioner"]

FROM runtime AS event-display
COPY --from=builder /out/event-display /usr/local/bin/
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/event-display"]
