#!/usr/bin/env bash
# The durable backends' benchmark: one run per backend, loopback only, every
# step bounded in time. For `nats` (a fresh nats-server -js, file storage)
# or `kafka` (a fresh tansu broker):
#
#   raw  the broker client alone: publish with acknowledgement + consume +
#        ack/commit, same broker, 1 KiB messages (loadgen raw-nats|raw-kafka)
#   raw10 (kafka) the same with 10 consumer groups, each reading the whole
#        topic: the baseline the same size as 10 subscriptions
#   (1)  sender -> channel -> nginx, 1 subscription
#   (10) sender -> channel -> nginx, 10 subscriptions
#   lat  ingress -> subscriber latency at a fixed rate (loadgen sink)
#   rss  dispatcher RSS idle and under the fixed-rate load
#
# Usage: bench/backends.sh nats|kafka [--duration 10s] [--rate 2000]
#        (kafka: KAFKA_CLASS_CONFIG='key: value, ...' adds class config)
set -euo pipefail
cd "$(dirname "$0")/.."

BACKEND=${1:?usage: bench/backends.sh nats|kafka [--duration 10s] [--rate 2000]}
shift
DURATION=10s
RATE=2000
CONCURRENCY=32
while (($#)); do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v nginx >/dev/null || { echo "nginx is needed: apt-get install -y nginx" >&2; exit 1; }
# BENCH_PROFILE=release measures the release build (ratios are taken
# within one run either way); the default is the fully optimised build.
PROFILE=${BENCH_PROFILE:-production}
# BENCH_BIN measures binaries already built (another commit's, say).
[ -n "${BENCH_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet -p loadgen -p "channel-$BACKEND"
# Where cargo put them (it honours CARGO_TARGET_DIR).
BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/$PROFILE}
. bench/common.sh
start_nginx

BROKER_PORT=$(free_port)
case "$BACKEND" in
  nats)
    nats-server -js -sd "$WORK/js" -a 127.0.0.1 -p "$BROKER_PORT" > "$WORK/broker.log" 2>&1 &
    PIDS+=($!)
    URL="nats://127.0.0.1:$BROKER_PORT"
    DISPATCHER=nats-dispatcher
    DISPATCHER_ARGS="--nats-url $URL ${BENCH_DISPATCHER_ARGS:-}"
    CLASS_YAML=$'apiVersion: eventing.knative.dev/v1alpha1\nkind: ClusterChannelProvisioner\nmetadata: {name: nats, annotations: {eventing.knative.dev/is-default-provisioner: "true"}}\nspec: {backend: nats}\n'
    RAW=(raw-nats --url "$URL")
    ;;
  kafka)
    TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
    "$TANSU" broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
      --storage-engine memory://tansu/ > "$WORK/broker.log" 2>&1 &
    PIDS+=($!)
    URL="127.0.0.1:$BROKER_PORT"
    DISPATCHER=kafka-dispatcher
    DISPATCHER_ARGS="--bootstrap-servers $URL ${BENCH_DISPATCHER_ARGS:-}"
    # One record per producer batch on both sides: tansu 0.6 cannot fetch
    # from inside a batch (docs/kafka.md). The bench's events have no
    # partition key: no sticky partitioning, so they spread over the
    # partitions per record like the raw producer's keyed records.
    # KAFKA_CLASS_CONFIG adds librdkafka properties to the channel's class
    # (YAML flow-map entries, e.g. 'fetch.wait.max.ms: 10').
    CLASS_YAML=$'apiVersion: eventing.knative.dev/v1alpha1\nkind: ClusterChannelProvisioner\nmetadata: {name: kafka, annotations: {eventing.knative.dev/is-default-provisioner: "true"}}\nspec: {backend: kafka, parameters: {numPartitions: 3, config: {batch.num.messages: 1, sticky.partitioning.linger.ms: 0'"${KAFKA_CLASS_CONFIG:+, $KAFKA_CLASS_CONFIG}"$'}}}\n'
    RAW=(raw-kafka --bootstrap "$URL" --partitions 3 --producer-config batch.num.messages=1)
    ;;
  *) echo "backend must be nats or kafka" >&2; exit 2 ;;
esac
export CLASS_YAML DISPATCHER DISPATCHER_ARGS
for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$BROKER_PORT") 2>/dev/null && break; sleep 0.05; done

# One channel phase: a fresh channel (its own topic and consumer groups),
# closed-loop sending for $DURATION, and the phase ends when every accepted
# event has reached every subscription (bounded: 120 s) -- the durable
# backends keep their backlog in the broker, where the engine's queue depth
# does not see it.
run_phase() { # subscriptions channel-name -> JSON
  manifests 1 "$1" "$SUB" "$WORK/$2.yaml" "$2"
  start_dispatcher "$WORK/$2.yaml"
  local before start send_json accepted want after end
  before=$(delivered)
  start=$(date +%s.%N)
  send_json=$("$BIN/loadgen" send --url "http://127.0.0.1:$INGRESS/default/${2}0" --duration "$DURATION" --concurrency "$CONCURRENCY" --size 1024)
  accepted=$(echo "$send_json" | json 'd["accepted"]')
  want=$((before + accepted * $1))
  for _ in $(seq 1 2400); do [ "$(delivered)" -ge "$want" ] && break; sleep 0.05; done
  end=$(date +%s.%N)
  after=$(delivered)
  stop_dispatcher
  python3 - "$send_json" "$before" "$after" "$start" "$end" "$1" <<'EOF'
import json, sys
send = json.loads(sys.argv[1])
delivered = int(sys.argv[3]) - int(sys.argv[2])
elapsed = float(sys.argv[5]) - float(sys.argv[4])
subs = int(sys.argv[6])
print(json.dumps({"ingress": send, "delivered": delivered, "elapsed_s": elapsed,
                  "complete": delivered >= send["accepted"] * subs,
                  "delivered_per_s": delivered / elapsed}))
EOF
}

echo "raw $BACKEND baseline" >&2
RAW_JSON=$("$BIN/loadgen" "${RAW[@]}" --duration "$DURATION" --concurrency "$CONCURRENCY" --size 1024)
echo "$RAW_JSON" >&2
# Ten subscriptions are ten consumer groups each reading the whole topic;
# the raw client gets the same: ten groups, every one consuming every record
# and committing, with the same 120 s bound on catching up as a channel
# phase. (NATS: no such phase yet; its row stays empty.)
RAW10_JSON=null
if [ "$BACKEND" = kafka ]; then
  echo "raw $BACKEND baseline, 10 consumer groups" >&2
  RAW10_JSON=$("$BIN/loadgen" "${RAW[@]}" --groups 10 --drain-limit 120s --duration "$DURATION" --concurrency "$CONCURRENCY" --size 1024)
  echo "$RAW10_JSON" >&2
fi
echo "(1) channel, 1 subscription" >&2
ONE=$(run_phase 1 one)
echo "(10) channel, 10 subscriptions" >&2
TEN=$(run_phase 10 ten)

echo "latency at $RATE events/s" >&2
SINK_PORT=$(free_port)
"$BIN/loadgen" sink --listen "127.0.0.1:$SINK_PORT" --max-duration 90s > "$WORK/sink.json" &
SINK_PID=$!
PIDS+=($SINK_PID)
wait_http "http://127.0.0.1:$SINK_PORT/stats" 10
manifests 1 1 "http://127.0.0.1:$SINK_PORT/" "$WORK/latency.yaml" lat
start_dispatcher "$WORK/latency.yaml"
sleep 1
RSS_IDLE=$(rss_kib "$DISP_PID")
"$BIN/loadgen" send --url "http://127.0.0.1:$INGRESS/default/lat0" --rate "$RATE" --duration "$DURATION" --concurrency 64 --size 1024 > "$WORK/lat-send.json" &
SEND_PID=$!
RSS_PEAK=0
while kill -0 "$SEND_PID" 2>/dev/null; do
  r=$(rss_kib "$DISP_PID"); [ "$r" -gt "$RSS_PEAK" ] && RSS_PEAK=$r
  sleep 0.2
done
# Until the sink has every accepted event (bounded: 60 s).
LAT_ACCEPTED=$(json 'd["accepted"]' < "$WORK/lat-send.json")
for _ in $(seq 1 1200); do
  [ "$(curl -sf "http://127.0.0.1:$SINK_PORT/stats" | json 'd["received"]')" -ge "$LAT_ACCEPTED" ] && break
  sleep 0.05
done
stop_dispatcher
kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true

python3 - "$BACKEND" "$RAW_JSON" "$ONE" "$TEN" "$(cat "$WORK/lat-send.json")" "$(cat "$WORK/sink.json")" "$RSS_IDLE" "$RSS_PEAK" "$RATE" "$RAW10_JSON" <<'PY'
import json, os, platform, subprocess, sys
backend = sys.argv[1]
raw, one, ten, send, sink = (json.loads(x) for x in sys.argv[2:7])
rss_idle, rss_peak, rate = int(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
raw10 = json.loads(sys.argv[10])
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
raw_rate = min(raw["published_per_s"], raw["consumed_per_s"])
r1 = one["delivered_per_s"] / raw_rate
# Ten subscriptions: events/s delivered to all ten, against the raw rate.
r10 = ten["delivered_per_s"] / 10 / raw_rate
ok = lambda c: "met" if c else "missed"
lat = sink["latency"]
raw10_row = ten10_row = ""
if raw10:
    # The same-size comparison: events/s to all ten subscriptions over the
    # events/s all ten raw groups consumed (equivalently deliveries/s over
    # raw records/s summed over the groups).
    raw10_rate = min(raw10["published_per_s"], raw10["consumed_per_s"])
    r10g = ten["delivered_per_s"] / 10 / raw10_rate
    raw10_row = (f"| raw {backend} client, 10 consumer groups (each reads the whole topic and commits) | "
                 f"{raw10['published_per_s']:,.0f} published/s, {raw10['consumed_per_s']:,.0f} events/s consumed by all 10 groups "
                 f"= {raw10['deliveries_per_s']:,.0f} records/s summed ({raw10['deliveries']:,} records, {raw10['consumed_elapsed_s']:.1f} s"
                 f"{'' if raw10['complete'] else ', INCOMPLETE'}) | baseline for 10 | |\n")
    ten10_row = (f"| channel, 10 subscriptions vs raw 10 groups | {ten['delivered_per_s'] / 10:,.0f} vs {raw10_rate:,.0f} events/s to all ten "
                 f"({ten['delivered_per_s']:,.0f} vs {raw10['deliveries_per_s']:,.0f} deliveries/s) | ≥ 0.7 × raw 10 groups | {r10g:.2f} — {ok(r10g >= 0.7)} |\n")
print(f"""| measurement | result | target | |
|---|---|---|---|
| raw {backend} client: publish+ack, consume+ack/commit | {raw['published_per_s']:,.0f} published/s, {raw['consumed_per_s']:,.0f} consumed/s | baseline | |
{raw10_row}| channel, 1 subscription | {one['delivered_per_s']:,.0f} deliveries/s (ingress {one['ingress']['accepted_per_s']:,.0f}/s; {one['delivered']:,} of {one['ingress']['accepted']:,} in {one['elapsed_s']:.1f} s{'' if one['complete'] else ', INCOMPLETE'}) | ≥ 0.7 × raw | {r1:.2f} — {ok(r1 >= 0.7)} |
| channel, 10 subscriptions | {ten['delivered_per_s']:,.0f} deliveries/s = {ten['delivered_per_s'] / 10:,.0f} events/s to all 10 (ingress {ten['ingress']['accepted_per_s']:,.0f}/s; {ten['delivered']:,} of {10 * ten['ingress']['accepted']:,} in {ten['elapsed_s']:.1f} s{'' if ten['complete'] else ', INCOMPLETE'}) | ≥ 0.7 × raw (1 group) | {r10:.2f} — {ok(r10 >= 0.7)} |
{ten10_row}| ingress → subscriber at {rate:,}/s | p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, p99.9 {lat['p999_ms']:.2f} ms ({sink['received']:,} events; sender achieved {send['accepted_per_s']:,.0f}/s) | p99 reported | |
| dispatcher RSS | {rss_idle/1024:.1f} MiB idle, {rss_peak/1024:.1f} MiB peak under that load | reported | |

commit `{commit}`, {cpu}, {os.cpu_count()} cores, Linux {platform.release()}""")
PY
