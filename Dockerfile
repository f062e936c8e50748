# Images of the channel binaries, one target each:
#
#   docker build --target inmemory-dispatcher -t knative-rs/inmemory-dispatcher .
#   docker build --target kafka-dispatcher    -t knative-rs/kafka-dispatcher .
#   docker build --target nats-dispatcher     -t knative-rs/nats-dispatcher .
#   docker build --target provisioner         -t knative-rs/provisioner .
#   docker build --target event-display       -t knative-rs/event-display .
#   docker build --target source-adapter      -t knative-rs/source-adapter .
#
# One builder stage compiles the whole workspace once (profile production:
# fat LTO, one codegen unit);
# each final image is Debian slim with only the C libraries the binaries
# link (OpenSSL for rdkafka's TLS/SASL), one binary, and a non-root user.
#
# Without a registry (no rust or debian image to pull), the `<target>-prebuilt`
# targets make the same images from binaries built on the host, on a local
# base image that already carries ca-certificates and libssl3:
#
#   docker build --target provisioner-prebuilt \
#     --build-arg RUNTIME_BASE=knative-rs-test/debian:bookworm-minbase \
#     -f Dockerfile -t knative-rs-test/provisioner:dev DIR_WITH_THE_BINARIES
#
# tests/compose/build-images.sh does this for every binary. The prebuilt
# targets come before the builder stage on purpose: Docker's legacy builder
# (the only one without buildx) builds every stage up to the target, and
# must not reach the builder. A test keeps each `<target>-prebuilt` equal to
# `<target>` but for where the binary comes from.

ARG RUNTIME_BASE=debian:bookworm-slim

FROM ${RUNTIME_BASE} AS runtime
# apt-get only when the base lacks the libraries (the local test base has them).
# The contracts directory exists, owned by the non-root user, so that a named
# volume mounted there (docker compose) starts writable by the provisioner.
RUN if [ "$(dpkg-query -W -f='${db:Status-Status} ' ca-certificates libssl3 2>/dev/null)" != "installed installed " ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ca-certificates libssl3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin nonroot \
 && mkdir -p /var/run/knative/contracts \
 && chown 65532:65532 /var/run/knative/contracts
USER 65532:65532

# ---- images from prebuilt binaries (the build context holds the binaries) ----

FROM runtime AS inmemory-dispatcher-prebuilt
COPY inmemory-dispatcher /usr/local/bin/
# Logs as JSON lines, for collectors.
ENV KN_CHANNEL_LOG_FORMAT=json
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/inmemory-dispatcher"]

FROM runtime AS kafka-dispatcher-prebuilt
COPY kafka-dispatcher /usr/local/bin/
# Logs as JSON lines, for collectors.
ENV KN_CHANNEL_LOG_FORMAT=json
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/kafka-dispatcher"]

FROM runtime AS nats-dispatcher-prebuilt
COPY nats-dispatcher /usr/local/bin/
# Logs as JSON lines, for collectors.
ENV KN_CHANNEL_LOG_FORMAT=json
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/nats-dispatcher"]

FROM runtime AS provisioner-prebuilt
COPY provisioner /usr/local/bin/
# Logs as JSON lines, for collectors.
ENV KN_CHANNEL_LOG_FORMAT=json
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/provisioner"]

FROM runtime AS source-adapter-prebuilt
COPY source-adapter /usr/local/bin/
COPY heartbeats /usr/local/bin/
ENV KN_SOURCE_LOG_FORMAT=json
EXPOSE 9091
ENTRYPOINT ["/usr/local/bin/source-adapter"]

FROM runtime AS event-display-prebuilt
COPY event-display /usr/local/bin/
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/event-display"]

# ---- images built from source ----

FROM rust:1.95-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile production --locked \
      -p channel-inmemory -p channel-kafka -p channel-nats -p provisioner -p event-display -p sources \
 && mkdir -p /out \
 && cp target/production/inmemory-dispatcher target/production/kafka-dispatcher \
       target/production/nats-dispatcher target/production/provisioner \
       target/production/event-display target/production/source-adapter \
       target/production/heartbeats /out/

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

FROM runtime AS source-adapter
COPY --from=builder /out/source-adapter /usr/local/bin/
COPY --from=builder /out/heartbeats /usr/local/bin/
ENV KN_SOURCE_LOG_FORMAT=json
EXPOSE 9091
ENTRYPOINT ["/usr/local/bin/source-adapter"]

FROM runtime AS event-display
COPY --from=builder /out/event-display /usr/local/bin/
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/event-display"]
