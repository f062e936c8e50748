#!/usr/bin/env bash
# Where the two cores go: CPU time per request of each process, in the
# baseline (a) sender -> nginx and in sender -> channel -> nginx with S
# subscriptions (the load of bench/run.sh). Read from /proc/PID/stat
# (user + system time) over the whole load phase of each process.
#
# It answers "how cheap would a delivery have to be": with n = nginx's and
# l = the sender's CPU per request in (a), and d the dispatcher's CPU per
# delivery, the channel reaches the ratio r of (a) only when
#   n + d + (ingress + sender per event) / S  <=  (n + l) / r
# on a machine whose cores are all busy in both runs.
#
# Usage: bench/cost.sh [--subs 10] [--duration 10s]
# Needs nginx and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=10
DURATION=10s
CONCURRENCY=32
while (($#)); do
  case "$1" in
    --subs) SUBS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

PROFILE=${BENCH_PROFILE:-production}
[ -n "${BENCH_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet -p loadgen -p channel-inmemory
BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/$PROFILE}

# shellcheck source=bench/common.sh
. bench/common.sh
start_nginx
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx/nginx.pid")" | head -1)
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The sender's CPU time is what `times` reports for the children of the
# shell that runs it; nginx's and the dispatcher's are read from /proc
# before the load and after the queues drained.
send() { # url -> the sender's JSON, then `times`
  bash -c '"$0" send --url "$1" --duration "$2" --concurrency "$3" --size 1024; times' \
    "$BIN/loadgen" "$1" "$DURATION" "$CONCURRENCY"
}

echo "(a) sender -> nginx" >&2
N0=$(cpu_ticks "$NGINX_WORKER")
A_OUT=$(send "$SUB")
NA=$(( $(cpu_ticks "$NGINX_WORKER") - N0 ))

echo "sender -> channel -> nginx, $SUBS subscriptions" >&2
manifests 1 "$SUBS" "$SUB" "$WORK/bench.yaml"
start_dispatcher "$WORK/bench.yaml"
N0=$(cpu_ticks "$NGINX_WORKER"); D0=$(cpu_ticks "$DISP_PID"); B0=$(delivered)
C_OUT=$(send "http://127.0.0.1:$INGRESS/default/bench0")
# Deliveries still queued when the sender stops count too.
for _ in $(seq 1 600); do [ "$(depth)" -eq 0 ] && break; sleep 0.05; done
NC=$(( $(cpu_ticks "$NGINX_WORKER") - N0 )); DC=$(( $(cpu_ticks "$DISP_PID") - D0 ))
DELIVERED=$(( $(delivered) - B0 ))
stop_dispatcher

python3 - "$A_OUT" "$C_OUT" "$NA" "$NC" "$DC" "$DELIVERED" "$TICK" "$SUBS" <<'EOF'
import json, sys
def parse(out):
    lines = out.strip().splitlines()
    send = json.loads(lines[0])
    # `times`: shell's own line, then children's "XmY.YYYs XmY.YYYs".
    child = lines[-1].split()
    secs = lambda s: float(s.split("m")[0]) * 60 + float(s.split("m")[1].rstrip("s"))
    return send, secs(child[0]) + secs(child[1])
(a, la), (c, lc) = parse(sys.argv[1]), parse(sys.argv[2])
na, nc, dc, delivered, tick, subs = (int(x) for x in sys.argv[3:9])
na, nc, dc = na / tick, nc / tick, dc / tick
req_a = a["accepted"]; ev_c = c["accepted"]
us = lambda s, n: 1e6 * s / max(n, 1)
n_per = us(na, req_a); l_per = us(la, req_a)
print(f"(a) {req_a:,} requests: nginx {n_per:.1f} µs, sender {l_per:.1f} µs per request "
      f"({a['accepted_per_s']:,.0f}/s, CPU {na + la:.1f} s in {a['elapsed_s']:.1f} s)")
print(f"(c) {ev_c:,} events, {delivered:,} deliveries: nginx {us(nc, delivered):.1f} µs per delivery, "
      f"dispatcher {us(dc, delivered):.1f} µs per delivery ({us(dc, ev_c):.0f} µs per event), "
      f"sender {us(lc, ev_c):.1f} µs per event")
for r in (0.45, 0.8):
    budget = (n_per + l_per) / r - us(nc, delivered) - us(lc, ev_c) / subs
    print(f"ratio {r}: the dispatcher may spend at most {budget:.1f} µs per delivery (ingress included)")
EOF
