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

# shellcheck source=bench/common.sh
. bench/common.sh
now() { date +%s.%N; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

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

RESULTS="$WORK/edits.tsv"
: > "$RESULTS"
PROV_CPU0=0; [ "$MODE" = standalone ] && PROV_CPU0=$(cpu_ticks "$PROV_PID")
DISP_CPU0=$(cpu_ticks "$DISP_PID")
for i in $(seq 1 "$EDITS"); do
  # One process writes the edit and watches for it, so the times are not
  # those of starting programs: the contract file's modification and the
  # new channel answering 202, probed every 5 ms for at most 30 s.
  t0=$(now)
  read -r applied_s contract_s < <(python3 - "$WORK/manifests/edits.yaml" "$i" "$DEAD" \
      "http://127.0.0.1:$INGRESS/default/edit$i" "$MODE" "$WORK/contracts/inmemory.json" <<'PY'
import os, sys, time, urllib.request, urllib.error
path, i, dead, url, mode, contract = sys.argv[1:7]
def mtime():
    try:
        return os.stat(contract).st_mtime
    except OSError:
        return 0.0
def probe():
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={
        "ce-specversion": "1.0", "ce-id": "probe", "ce-type": "scale.probe",
        "ce-source": "bench/scale.sh", "content-type": "application/json"})
    try:
        return urllib.request.urlopen(req, timeout=2).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0
before = mtime() if mode == "standalone" else 0.0
t0 = time.time()
with open(path, "a") as f:
    f.write(f"""---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {{name: edit{i}, namespace: default}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: edit{i}-s0, namespace: default}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: edit{i}}}
  subscriber: {{uri: "{dead}"}}
  delivery: {{retry: 0}}
""")
applied, written = -1.0, -1.0
while time.time() - t0 < 30:
    if mode == "standalone" and written < 0 and mtime() > before:
        written = mtime() - t0
    if probe() == 202:
        applied = time.time() - t0
        break
    time.sleep(0.005)
print(f"{applied} {written}")
PY
)
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
