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

# BENCH_PROFILE=release measures the release build (ratios are taken
# within one run either way); the default is the fully optimised build.
PROFILE=${BENCH_PROFILE:-production}
# BENCH_BIN measures binaries already built (another commit's, say).
[ -n "${BENCH_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet -p loadgen -p channel-inmemory
BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/$PROFILE}
mkdir -p "$OUT"

# shellcheck source=bench/common.sh
. bench/common.sh
start_nginx

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
