#!/usr/bin/env bash
# A CPU profile of the in-memory dispatcher under the load of bench/run.sh:
# one channel with S subscriptions (nginx `return 202;`), loadgen sending
# 1 KiB events over 32 connections, `perf record` (software clock, call
# graphs) on the dispatcher for the middle of the run. Prints the flat
# profile (self time, top 40 symbols) and keeps perf.data in --out.
#
# Usage: bench/profile.sh [--subs 10] [--duration 12s] [--out bench-results]
# Needs nginx, perf (Debian: linux-perf) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=10
DURATION=12s
OUT=bench-results
CONCURRENCY=32
while (($#)); do
  case "$1" in
    --subs) SUBS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v perf >/dev/null || { echo "perf is needed: apt-get install -y linux-perf" >&2; exit 1; }

PROFILE=${BENCH_PROFILE:-production}
[ -n "${BENCH_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet -p loadgen -p channel-inmemory
BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/$PROFILE}
mkdir -p "$OUT"

# shellcheck source=bench/common.sh
. bench/common.sh
start_nginx
manifests 1 "$SUBS" "$SUB" "$WORK/bench.yaml"
start_dispatcher "$WORK/bench.yaml"
"$BIN/loadgen" send --url "http://127.0.0.1:$INGRESS/default/bench0" --duration "$DURATION" \
  --concurrency "$CONCURRENCY" --size 1024 > "$WORK/send.json" &
SEND_PID=$!
PIDS+=($SEND_PID)
SECS=${DURATION%s}
sleep 2
perf record -F 499 -e cpu-clock --call-graph dwarf,16384 -p "$DISP_PID" -o "$OUT/perf-$SUBS.data" -- sleep $((SECS - 4)) 2> /dev/null
wait "$SEND_PID" || true
echo "ingress: $(cat "$WORK/send.json")" >&2
perf report -i "$OUT/perf-$SUBS.data" --no-children --sort symbol --stdio 2> /dev/null \
  | grep -E "^ +[0-9]" | sed -E "s/ +-? +-? *$//; s/ {2,}/ /g" | head -40
