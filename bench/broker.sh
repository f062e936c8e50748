#!/usr/bin/env bash
# The broker benchmark: what a broker and its filters cost over a plain
# channel, from one run, loopback only, every step bounded in time.
#
#   (a) sender -> channel -> nginx, 1 subscription                (the baseline)
#   (b) sender -> broker  -> nginx, 1 match-all trigger           target (b)/(a) >= 0.95
#   (c) sender -> broker  -> nginx, 10 triggers each matching 1/10 target (c)/(a) >= 0.9
#
# Deliveries/s are counted from the dispatcher's /metrics until the queues
# drained, over the time from the first send to the drain, as bench/run.sh
# does. In (c) every event reaches exactly one subscriber: the other nine
# triggers settle it in their filter, without an HTTP request.
#
# Usage: bench/broker.sh [--duration 10s] [--concurrency 32] [--out bench-results]
# Needs nginx (Debian: apt-get install nginx) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10s
OUT=bench-results
CONCURRENCY=32
while (($#)); do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --concurrency) CONCURRENCY="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v nginx >/dev/null || { echo "nginx is needed: apt-get install -y nginx" >&2; exit 1; }

# BENCH_PROFILE=release measures the release build (ratios are taken
# within one run either way); the default is the fully optimised build.
PROFILE=${BENCH_PROFILE:-production}
cargo build --profile "$PROFILE" --quiet -p loadgen -p channel-inmemory
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
mkdir -p "$OUT"
# shellcheck source=bench/common.sh
. bench/common.sh
start_nginx

broker_manifests() { # triggers keyed(0|1) file
  python3 - "$1" "$2" "$SUB" "$3" <<'EOF'
import sys
triggers, keyed, uri, path = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], sys.argv[4]
with open(path, "w") as f:
    f.write("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: bench, namespace: default}\n")
    for t in range(triggers):
        filt = f"  filter: {{attributes: {{benchkey: \"{t}\"}}}}\n" if keyed else ""
        f.write(f"---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t{t}, namespace: default}}\n"
                f"spec:\n  broker: bench\n{filt}  subscriber: {{uri: \"{uri}\"}}\n")
EOF
}

run_phase() { # manifests-file path keys -> JSON
  start_dispatcher "$1"
  local before start send_json after end
  before=$(delivered)
  start=$(date +%s.%N)
  send_json=$("$BIN/loadgen" send --url "http://127.0.0.1:$INGRESS$2" --duration "$DURATION" --concurrency "$CONCURRENCY" --size 1024 --keys "$3")
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

echo "(a) channel, 1 subscription" >&2
manifests 1 1 "$SUB" "$WORK/channel.yaml"
A=$(run_phase "$WORK/channel.yaml" /default/bench0 0)
echo "(b) broker, 1 match-all trigger" >&2
broker_manifests 1 0 "$WORK/broker1.yaml"
B=$(run_phase "$WORK/broker1.yaml" /brokers/default/bench 0)
echo "(c) broker, 10 triggers each matching 1/10" >&2
broker_manifests 10 1 "$WORK/broker10.yaml"
C=$(run_phase "$WORK/broker10.yaml" /brokers/default/bench 10)

python3 - "$A" "$B" "$C" "$OUT" <<'EOF'
import json, os, platform, subprocess, sys
a, b, c = (json.loads(x) for x in sys.argv[1:4])
out = sys.argv[4]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rb, rc = b["delivered_per_s"] / a["delivered_per_s"], c["delivered_per_s"] / a["delivered_per_s"]
res = {"commit": commit, "cpu": cpu, "cores": os.cpu_count(), "a": a, "b": b, "c": c,
       "ratio_b_over_a": rb, "ratio_c_over_a": rc}
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "broker.json"), "w") as f:
    json.dump(res, f, indent=2)
ok = lambda cond: "met" if cond else "missed"
print(f"""| measurement | deliveries/s | ingress accepted/s | target | |
|---|---|---|---|---|
| (a) channel, 1 subscription | {a['delivered_per_s']:,.0f} | {a['ingress']['accepted_per_s']:,.0f} | baseline | |
| (b) broker, 1 match-all trigger | {b['delivered_per_s']:,.0f} | {b['ingress']['accepted_per_s']:,.0f} | (b)/(a) ≥ 0.95 | {rb:.2f} — {ok(rb >= 0.95)} |
| (c) broker, 10 triggers each matching 1/10 | {c['delivered_per_s']:,.0f} | {c['ingress']['accepted_per_s']:,.0f} | (c)/(a) ≥ 0.9 | {rc:.2f} — {ok(rc >= 0.9)} |

commit `{commit}`, {cpu}, {os.cpu_count()} cores, Linux {platform.release()}""")
EOF
