# Shared pieces of the benchmark scripts (sourced; needs BIN, and DURATION
# and CONCURRENCY for the load phases, set by the caller). Sourcing it makes
# a scratch directory, $WORK, and on exit kills every process whose pid was
# added to PIDS and removes $WORK.

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
start_nginx() { # -> sets NGINX_PORT, SUB
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
}

manifests() { # channels subscriptions-per-channel subscriber-uri file [channel-name-prefix]
  python3 - "$@" <<'EOF'
import sys
channels, subs, uri, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
prefix = sys.argv[5] if len(sys.argv) > 5 else "bench"
import os
with open(path, "w") as f:
    f.write(os.environ.get("CLASS_YAML", ""))
    for c in range(channels):
        f.write(f"---\napiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: {prefix}{c}, namespace: default}}\n")
        for s in range(subs):
            f.write(f"---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: {prefix}{c}-s{s}, namespace: default}}\n"
                    f"spec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: {prefix}{c}}}\n  subscriber: {{uri: \"{uri}\"}}\n")
EOF
}

start_dispatcher() { # manifests-file -> sets DISP_PID, INGRESS, ADMIN
  INGRESS=$(free_port); ADMIN=$(free_port)
  RUST_LOG=warn "$BIN/${DISPATCHER:-inmemory-dispatcher}" --manifests "$1" \
    --listen "127.0.0.1:$INGRESS" --admin-listen "127.0.0.1:$ADMIN" --drain-timeout 2s \
    ${DISPATCHER_ARGS:-} \
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

