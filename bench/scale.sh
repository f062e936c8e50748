#!/usr/bin/env bash
# The scale benchmark: many channels, the configuration edited again and
# again, a busy channel delivering throughout. Loopback only, every step
# bounded in time, every process it starts killed on exit.
#
#   start    time from exec to /readyz with N channels x S subscriptions
#   idle     dispatcher VmRSS once started (the "first steady value")
#   edits    E successive edits, each appending one Channel and its
#            Subscription to a manifest file: the time from the write until
#            the new channel answers 202 at ingress, and VmRSS after each
#   latency  a fixed-rate sender into a channel whose subscriber is
#            `loadgen sink`, running across all the edits: p50/p99/max of
#            ingress-to-subscriber latency while the dispatcher reloads
#
# Modes:
#   embedded     inmemory-dispatcher --manifests DIR (compiles the YAML itself)
#   standalone   provisioner standalone --manifests DIR writes the contract,
#                inmemory-dispatcher --contract FILE follows it; also reports
#                when the contract file was rewritten after each edit, the
#                provisioner's VmRSS and its CPU time per edit
#
# Usage: bench/scale.sh [--mode embedded|standalone] [--channels 10000]
#          [--subs 1] [--edits 20] [--interval 2] [--rate 500]
#          [--profile production] [--out bench-results]
# Needs python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=embedded
CHANNELS=10000
SUBS=1
EDITS=20
INTERVAL=2
RATE=500
PROFILE=production
OUT=bench-results
while (($#)); do
  case "$1" in
    --mode) MODE="$2"; shift 2 ;;
    --channels) CHANNELS="$2"; shift 2 ;;
    --subs) SUBS="$2"; shift 2 ;;
    --edits) EDITS="$2"; shift 2 ;;
    --interval) INTERVAL="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --profile) PROFILE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$MODE" in embedded|standalone) ;; *) echo "--mode is embedded or standalone" >&2; exit 2 ;; esac

[ -n "${SCALE_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet -p loadgen -p channel-inmemory -p provisioner
BIN=${SCALE_BIN:-${CARGO_TARGET_DIR:-target}/$PROFILE}
[ "$PROFILE" = dev ] && BIN=${CARGO_TARGET_DIR:-target}/debug
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/common.sh
. bench/common.sh
now() { date +%s.%N; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
mtime() { python3 -c 'import os,sys; print(os.stat(sys.argv[1]).st_mtime)' "$1" 2>/dev/null || echo 0; }

# Idle channels subscribe to a closed port: they never receive an event.
DEAD=http://127.0.0.1:1/
mkdir -p "$WORK/manifests"
echo "generating $CHANNELS channels x $SUBS subscriptions" >&2
manifests "$CHANNELS" "$SUBS" "$DEAD" "$WORK/manifests/channels.yaml" scale
SINK_PORT=$(free_port)
manifests 1 1 "http://127.0.0.1:$SINK_PORT/" "$WORK/manifests/busy.yaml" busy
: > "$WORK/manifests/edits.yaml"
echo "manifests: $(du -sh "$WORK/manifests" | cut -f1)" >&2

INGRESS=$(free_port); ADMIN=$(free_port)
START=$(now)
if [ "$MODE" = embedded ]; then
  RUST_LOG=warn "$BIN/inmemory-dispatcher" --manifests "$WORK/manifests" \
    --listen "127.0.0.1:$INGRESS" --admin-listen "127.0.0.1:$ADMIN" --drain-timeout 2s \
    > "$WORK/dispatcher.log" 2>&1 &
  DISP_PID=$!; PIDS+=("$DISP_PID")
else
  PROV=$(free_port)
  RUST_LOG=warn "$BIN/provisioner" standalone --manifests "$WORK/manifests" \
    --contracts-dir "$WORK/contracts" --listen "127.0.0.1:$PROV" \
    --dispatcher-admin "inmemory=http://127.0.0.1:$ADMIN" \
    --dispatcher-url "inmemory=http://127.0.0.1:$INGRESS" \
    > "$WORK/provisioner.log" 2>&1 &
  PROV_PID=$!; PIDS+=("$PROV_PID")
  for _ in $(seq 1 1200); do [ -s "$WORK/contracts/inmemory.json" ] && break; sleep 0.05; done
  RUST_LOG=warn "$BIN/inmemory-dispatcher" --contract "$WORK/contracts/inmemory.json" \
    --listen "127.0.0.1:$INGRESS" --admin-listen "127.0.0.1:$ADMIN" --drain-timeout 2s \
    > "$WORK/dispatcher.log" 2>&1 &
  DISP_PID=$!; PIDS+=("$DISP_PID")
fi
wait_http "http://127.0.0.1:$ADMIN/readyz" 120
READY_S=$(python3 -c "print($(now) - $START)")
sleep 2
RSS_IDLE=$(rss_kib "$DISP_PID")
PROV_RSS_IDLE=0; [ "$MODE" = standalone ] && PROV_RSS_IDLE=$(rss_kib "$PROV_PID")
echo "ready after ${READY_S}s, RSS ${RSS_IDLE} KiB" >&2

# The busy channel: a fixed rate for the whole edit loop.
SEND_FOR=$(( EDITS * INTERVAL + 5 ))
"$BIN/loadgen" sink --listen "127.0.0.1:$SINK_PORT" --max-duration "$((SEND_FOR + 30))s" > "$WORK/sink.json" &
SINK_PID=$!; PIDS+=("$SINK_PID")
wait_http "http://127.0.0.1:$SINK_PORT/stats" 10
"$BIN/loadgen" send --url "http://127.0.0.1:$INGRESS/default/busy0" --rate "$RATE" \
  --duration "${SEND_FOR}s" --concurrency 16 --size 1024 > "$WORK/send.json" &
SEND_PID=$!; PIDS+=("$SEND_PID")
sleep 2

probe() { # channel -> HTTP status of one event posted to it
  curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$INGRESS/default/$1" \
    -H 'ce-specversion: 1.0' -H 'ce-id: probe' -H 'ce-type: scale.probe' \
    -H 'ce-source: bench/scale.sh' -H 'content-type: application/json' --data '{}' || true
}

RESULTS="$WORK/edits.tsv"
: > "$RESULTS"
PROV_CPU0=0; [ "$MODE" = standalone ] && PROV_CPU0=$(cpu_ticks "$PROV_PID")
DISP_CPU0=$(cpu_ticks "$DISP_PID")
for i in $(seq 1 "$EDITS"); do
  before_contract=0
  [ "$MODE" = standalone ] && before_contract=$(mtime "$WORK/contracts/inmemory.json")
  t0=$(now)
  cat >> "$WORK/manifests/edits.yaml" <<EOF
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: edit$i, namespace: default}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: edit$i-s0, namespace: default}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: edit$i}
  subscriber: {uri: "$DEAD"}
  delivery: {retry: 0}
EOF
  contract_s=-1
  applied_s=-1
  deadline=$(python3 -c "print($t0 + 30)")
  while python3 -c "import sys; sys.exit(0 if $(now) < $deadline else 1)"; do
    if [ "$MODE" = standalone ] && [ "$contract_s" = -1 ]; then
      m=$(mtime "$WORK/contracts/inmemory.json")
      if python3 -c "import sys; sys.exit(0 if $m > $before_contract else 1)"; then
        contract_s=$(python3 -c "print($m - $t0)")
      fi
    fi
    if [ "$(probe "edit$i")" = 202 ]; then applied_s=$(python3 -c "print($(now) - $t0)"); break; fi
    sleep 0.02
  done
  rest=$(python3 -c "print(max(0.0, $INTERVAL - ($(now) - $t0)))")
  sleep "$rest"
  prss=0; [ "$MODE" = standalone ] && prss=$(rss_kib "$PROV_PID")
  printf '%s\t%s\t%s\t%s\t%s\n' "$i" "$applied_s" "$contract_s" "$(rss_kib "$DISP_PID")" "$prss" >> "$RESULTS"
  echo "edit $i: applied after ${applied_s}s, RSS $(rss_kib "$DISP_PID") KiB" >&2
done
PROV_CPU1=0; [ "$MODE" = standalone ] && PROV_CPU1=$(cpu_ticks "$PROV_PID")
DISP_CPU1=$(cpu_ticks "$DISP_PID")
wait "$SEND_PID" || true
sleep 2
kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true

python3 - "$RESULTS" "$WORK/send.json" "$WORK/sink.json" "$MODE" "$CHANNELS" "$SUBS" "$READY_S" \
  "$RSS_IDLE" "$PROV_RSS_IDLE" "$((PROV_CPU1 - PROV_CPU0))" "$((DISP_CPU1 - DISP_CPU0))" \
  "$(getconf CLK_TCK)" "$RATE" "$OUT" "$PROFILE" <<'EOF'
import json, os, platform, subprocess, sys
(results, send_path, sink_path, mode, channels, subs, ready_s, rss_idle, prov_rss_idle,
 prov_ticks, disp_ticks, hz, rate, out, profile) = sys.argv[1:16]
rows = [l.split("\t") for l in open(results).read().splitlines() if l]
edits = [{"edit": int(r[0]), "applied_s": float(r[1]), "contract_s": float(r[2]),
          "rss_kib": int(r[3]), "provisioner_rss_kib": int(r[4])} for r in rows]
send = json.load(open(send_path))
sink = json.load(open(sink_path))
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rss_idle = int(rss_idle)
applied = [e["applied_s"] for e in edits]
res = {
    "commit": commit, "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "profile": profile,
    "mode": mode, "channels": int(channels), "subscriptions_per_channel": int(subs),
    "ready_s": float(ready_s), "rss_idle_kib": rss_idle, "edits": edits,
    "rss_last_kib": edits[-1]["rss_kib"] if edits else rss_idle,
    "rss_max_kib": max([e["rss_kib"] for e in edits] + [rss_idle]),
    "applied_max_s": max(applied) if applied else None,
    "applied_never": sum(1 for a in applied if a < 0),
    "dispatcher_cpu_s_per_edit": int(disp_ticks) / int(hz) / max(1, len(edits)),
    "busy_channel": {"rate": int(rate), "sent": send, "latency": sink.get("latency"), "received": sink.get("received")},
}
if mode == "standalone":
    res["provisioner_rss_idle_kib"] = int(prov_rss_idle)
    res["provisioner_rss_max_kib"] = max([e["provisioner_rss_kib"] for e in edits] + [int(prov_rss_idle)])
    res["provisioner_cpu_s_per_edit"] = int(prov_ticks) / int(hz) / max(1, len(edits))
    res["contract_written_max_s"] = max(e["contract_s"] for e in edits) if edits else None
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, f"scale-{mode}-{channels}x{subs}.json"), "w") as f:
    json.dump(res, f, indent=2)
mib = lambda k: k / 1024
growth = (res["rss_max_kib"] - rss_idle) / rss_idle * 100
lat = sink.get("latency") or {}
print(f"""| measurement ({mode}, {int(channels):,} channels × {subs}) | result | target |
|---|---|---|
| start to /readyz | {float(ready_s):.2f} s | ≤ 1 s |
| RSS idle | {mib(rss_idle):.1f} MiB | ≤ 64 MiB |
| RSS after {len(edits)} edits (max over the loop) | {mib(res['rss_last_kib']):.1f} MiB ({mib(res['rss_max_kib']):.1f} max, {growth:+.1f} %) | ≤ +10 % |
| edit applied (write → new channel answers 202) | max {res['applied_max_s']:.2f} s{' (' + str(res['applied_never']) + ' never)' if res['applied_never'] else ''} | ≤ 1 s |
| dispatcher CPU per edit | {res['dispatcher_cpu_s_per_edit']:.2f} s | |
| busy channel across the edits ({int(rate):,}/s) | p50 {lat.get('p50_ms', 0):.2f} ms, p99 {lat.get('p99_ms', 0):.2f} ms, max {lat.get('max_ms', 0):.2f} ms ({sink.get('received', 0):,} of {send.get('accepted', 0):,} accepted) | no pause |""")
if mode == "standalone":
    print(f"""| contract rewritten after an edit | max {res['contract_written_max_s']:.2f} s | ≤ 1 s |
| provisioner RSS idle / max | {mib(res['provisioner_rss_idle_kib']):.1f} / {mib(res['provisioner_rss_max_kib']):.1f} MiB | |
| provisioner CPU per edit | {res['provisioner_cpu_s_per_edit']:.2f} s | |""")
print(f"\ncommit `{commit}`, profile {profile}, {cpu}, {os.cpu_count()} cores, Linux {platform.release()}")
EOF
