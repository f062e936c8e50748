#!/usr/bin/env bash
# The channel benchmark: one run, loopback only, every step bounded in time.
#
#   (a) sender -> nginx directly                         (the baseline)
#   (b) sender -> channel -> nginx, 1 subscription
#   (c) sender -> channel -> nginx, 10 subscriptions
#   (d) latency ingress -> subscriber at a fixed rate
#   (e) dispatcher RSS idle, and under load with 1,000 channels x 2 subscriptions
#
# Usage: bench/run.sh [--duration 10s] [--rate 5000] [--out bench-results]
# Needs nginx (Debian: apt-get install nginx) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10s
RATE=5000
OUT=bench-results
CONCURRENCY=32
while (($#)); do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v nginx >/dev/null || { echo "nginx is needed: apt-get install -y nginx" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }

cargo build --release --quiet -p loadgen -p channel-inmemory
BIN=target/release
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
wait_http() { # url, seconds
  for _ in $(seq 1 $(( $2 * 20 ))); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "timed out waiting for $1" >&2; return 1
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# --- nginx answering 202 ------------------------------------------------------
NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_buffer_size 64k;
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    location / { return 202; }
  }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/" 10 || true
SUB="http://127.0.0.1:$NGINX_PORT/"

manifests() { # channels subscriptions-per-channel subscriber-uri file
  python3 - "$@" <<'EOF'
import sys
channels, subs, uri, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(path, "w") as f:
    for c in range(channels):
        f.write(f"---\napiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: bench{c}, namespace: default}}\n")
        for s in range(subs):
            f.write(f"---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: bench{c}-s{s}, namespace: default}}\n"
                    f"spec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: bench{c}}}\n  subscriber: {{uri: \"{uri}\"}}\n")
EOF
}

start_dispatcher() { # manifests-file -> sets DISP_PID, INGRESS, ADMIN
  INGRESS=$(free_port); ADMIN=$(free_port)
  RUST_LOG=warn "$BIN/inmemory-dispatcher" --manifests "$1" \
    --listen "127.0.0.1:$INGRESS" --admin-listen "127.0.0.1:$ADMIN" --drain-timeout 2s \
    > "$WORK/dispatcher.log" 2>&1 &
  DISP_PID=$!
  PIDS+=($DISP_PID)
  wait_http "http://127.0.0.1:$ADMIN/readyz" 60
}

stop_dispatcher() { kill "$DISP_PID" 2>/dev/null || true; wait "$DISP_PID" 2>/dev/null || true; }

delivered() { # sum of 2xx deliveries
  curl -sf "http://127.0.0.1:$ADMIN/metrics" | awk '/^kn_channel_deliveries_total\{.*response_code_class="2xx"/ {s+=$NF} END {printf "%d\n", s}'
}
depth() {
  curl -sf "http://127.0.0.1:$ADMIN/metrics" | awk '/^kn_channel_queue_depth\{/ {s+=$NF} END {printf "%d\n", s}'
}

run_channel() { # subscriptions -> prints JSON {accepted_per_s, delivered_per_s, ...}
  manifests 1 "$1" "$SUB" "$WORK/bench.yaml"
  start_dispatcher "$WORK/bench.yaml"
  local before start send_json after end
  before=$(delivered)
  start=$(date +%s.%N)
  send_json=$("$BIN/loadgen" send --url "http://127.0.0.1:$INGRESS/default/bench0" --duration "$DURATION" --concurrency "$CONCURRENCY" --size 1024)
  # Let the queues drain (bounded: 30 s).
  for _ in $(seq 1 600); do [ "$(depth)" -eq 0 ] && break; sleep 0.05; done
  end=$(date +%s.%N)
  after=$(delivered)
  stop_dispatcher
  python3 - "$send_json" "$before" "$after" "$start" "$end" <<'EOF'
import json, sys
send = json.loads(sys.argv[1])
delivered = int(sys.argv[3]) - int(sys.argv[2])
elapsed = float(sys.argv[5]) - float(sys.argv[4])
print(json.dumps({"ingress": send, "delivered": delivered, "elapsed_s": elapsed,
                  "delivered_per_s": delivered / elapsed}))
EOF
}

echo "(a) sender -> nginx" >&2
A=$("$BIN/loadgen" send --url "$SUB" --duration "$DURATION" --concurrency "$CONCURRENCY" --size 1024)
echo "(b) sender -> channel -> nginx, 1 subscription" >&2
B=$(run_channel 1)
echo "(c) sender -> channel -> nginx, 10 subscriptions" >&2
C=$(run_channel 10)

echo "(d) latency at $RATE events/s" >&2
SINK_PORT=$(free_port)
"$BIN/loadgen" sink --listen "127.0.0.1:$SINK_PORT" --max-duration 60s > "$WORK/sink.json" &
SINK_PID=$!
PIDS+=($SINK_PID)
wait_http "http://127.0.0.1:$SINK_PORT/stats" 10
manifests 1 1 "http://127.0.0.1:$SINK_PORT/" "$WORK/latency.yaml"
start_dispatcher "$WORK/latency.yaml"
D_SEND=$("$BIN/loadgen" send --url "http://127.0.0.1:$INGRESS/default/bench0" --rate "$RATE" --duration "$DURATION" --concurrency 64 --size 1024)
for _ in $(seq 1 200); do [ "$(depth)" -eq 0 ] && break; sleep 0.05; done
stop_dispatcher
kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
D=$(cat "$WORK/sink.json")

echo "(e) RSS" >&2
manifests 1 2 "$SUB" "$WORK/quick.yaml"
start_dispatcher "$WORK/quick.yaml"
sleep 1
RSS_IDLE=$(rss_kib "$DISP_PID")
stop_dispatcher
manifests 1000 2 "$SUB" "$WORK/many.yaml"
start_dispatcher "$WORK/many.yaml"
sleep 1
RSS_MANY_IDLE=$(rss_kib "$DISP_PID")
RSS_PEAK=0
for c in 0 1 2 3; do
  "$BIN/loadgen" send --url "http://127.0.0.1:$INGRESS/default/bench$((c * 250))" --duration "$DURATION" --concurrency 8 --size 1024 > "$WORK/many-$c.json" &
  PIDS+=($!)
done
end=$(( $(date +%s) + ${DURATION%s} + 2 ))
while [ "$(date +%s)" -lt "$end" ]; do
  r=$(rss_kib "$DISP_PID"); [ "$r" -gt "$RSS_PEAK" ] && RSS_PEAK=$r
  sleep 0.2
done
wait_many=$(cat "$WORK"/many-*.json | python3 -c 'import json,sys; print(sum(json.loads(l)["accepted_per_s"] for l in sys.stdin if l.strip()))')
stop_dispatcher

python3 - "$A" "$B" "$C" "$D_SEND" "$D" "$RSS_IDLE" "$RSS_MANY_IDLE" "$RSS_PEAK" "$wait_many" "$RATE" "$OUT" <<'EOF'
import json, os, platform, subprocess, sys
a, b, c, dsend, d = (json.loads(x) for x in sys.argv[1:6])
rss_idle, rss_many_idle, rss_peak = (int(x) for x in sys.argv[6:9])
many_rate, rate, out = float(sys.argv[9]), int(sys.argv[10]), sys.argv[11]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
res = {
    "commit": commit, "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
    "a_nginx_per_s": a["accepted_per_s"],
    "b_ingress_per_s": b["ingress"]["accepted_per_s"], "b_delivered_per_s": b["delivered_per_s"],
    "b_rejected": b["ingress"]["rejected"],
    "c_ingress_per_s": c["ingress"]["accepted_per_s"], "c_delivered_per_s": c["delivered_per_s"],
    "c_rejected": c["ingress"]["rejected"],
    "d_rate": rate, "d_sent_per_s": dsend["accepted_per_s"], "d_latency": d["latency"], "d_received": d["received"],
    "d_ingress_client_latency": dsend["client_latency"],
    "e_rss_idle_kib": rss_idle, "e_rss_1000x2_idle_kib": rss_many_idle, "e_rss_1000x2_load_peak_kib": rss_peak,
    "e_load_per_s": many_rate,
}
res["ratio_b_over_a"] = res["b_delivered_per_s"] / res["a_nginx_per_s"]
res["ratio_c_over_a"] = res["c_delivered_per_s"] / res["a_nginx_per_s"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(res, f, indent=2)
mib = lambda k: k / 1024
ok = lambda cond: "met" if cond else "missed"
print(f"""| measurement | result | target | |
|---|---|---|---|
| (a) sender → nginx | {res['a_nginx_per_s']:,.0f} events/s | baseline | |
| (b) sender → channel → nginx, 1 subscription | {res['b_delivered_per_s']:,.0f} deliveries/s (ingress {res['b_ingress_per_s']:,.0f}/s) | (b)/(a) ≥ 0.45 | {res['ratio_b_over_a']:.2f} — {ok(res['ratio_b_over_a'] >= 0.45)} |
| (c) 10 subscriptions | {res['c_delivered_per_s']:,.0f} deliveries/s (ingress {res['c_ingress_per_s']:,.0f}/s) | (c)/(a) ≥ 0.8 | {res['ratio_c_over_a']:.2f} — {ok(res['ratio_c_over_a'] >= 0.8)} |
| (d) ingress → subscriber at {rate:,}/s | p50 {d['latency']['p50_ms']:.2f} ms, p99 {d['latency']['p99_ms']:.2f} ms, p99.9 {d['latency']['p999_ms']:.2f} ms ({d['received']:,} events) | p99 ≤ 2 ms | {ok(d['latency']['p99_ms'] <= 2.0)} |
| (e) RSS idle (1 channel × 2 subscriptions) | {mib(rss_idle):.1f} MiB | ≤ 15 MiB | {ok(mib(rss_idle) <= 15)} |
| (e) RSS 1,000 channels × 2 subscriptions, idle | {mib(rss_many_idle):.1f} MiB | | |
| (e) RSS 1,000 × 2 under load ({many_rate:,.0f} events/s) | {mib(rss_peak):.1f} MiB peak | ≤ 64 MiB | {ok(mib(rss_peak) <= 64)} |

commit `{commit}`, {cpu}, {os.cpu_count()} cores, Linux {platform.release()}""")
EOF
