# The brokers of the compose tests, for machines without a registry (the
# user-facing deploy/docker-compose.yaml runs apache/kafka and nats images).
# The build context holds the two static binaries; build-images.sh builds
# both targets on the local Debian base image.

ARG BASE=knative-rs-test/base:bookworm-1

# NATS with JetStream: the compose file's `command` gives the flags.
FROM ${BASE} AS nats
COPY nats-server /usr/local/bin/
EXPOSE 4222 6222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
CMD ["-js", "-sd", "/data", "-m", "8222"]

# tansu, a Kafka-protocol broker, standing in for Apache Kafka on the
# compose service `kafka` (hence the advertised listener kafka:9092).
# Memory storage: the build of tansu used here has no other engine that
# works without an external database; a restarted broker starts empty.
FROM ${BASE} AS tansu
COPY tansu /usr/local/bin/
ENV LISTENER_URL=tcp://0.0.0.0:9092 \
    ADVERTISED_LISTENER_URL=tcp://kafka:9092 \
    STORAGE_ENGINE=memory://tansu/ \
    RUST_LOG=warn
EXPOSE 9092
ENTRYPOINT ["/usr/local/bin/tansu", "broker"]
