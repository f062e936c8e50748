#!/usr/bin/env bash
# What security costs at ingress, one run, loopback only, bounded in time:
#
#   (a) sender -> channel (HTTP)              -> nginx   (the baseline)
#   (b) sender -> channel (HTTPS, same dispatcher, permissive) -> nginx
#   (c) sender -> channel (HTTP + OIDC: an RS256 JWT, the same token on
#       every request as a producer sends it, checked once and then
#       remembered; the default authorization mode) -> nginx
#
# Usage: bench/security.sh [--duration 10s] [--out bench-results]
# BENCH_PROFILE=release uses the release build (default: production, the
# fully optimised one; ratios are taken within one run either way).
# Needs nginx, openssl and python3.
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
for tool in nginx openssl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done

PROFILE=${BENCH_PROFILE:-production}
cargo build --profile "$PROFILE" --quiet -p loadgen -p channel-inmemory
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
mkdir -p "$OUT"

# shellcheck source=bench/common.sh
. bench/common.sh
start_nginx

# A CA and a certificate for 127.0.0.1.
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=bench-ca 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout tls.key -out tls.csr -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > san.ext
  openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out tls.crt -days 1 -extfile san.ext 2>/dev/null
  # An RSA signing key, its JWKS, and a token for the channel's audience.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out jwt.key 2>/dev/null
)
MODULUS=$(openssl rsa -in "$WORK/jwt.key" -noout -modulus | cut -d= -f2)
TOKEN=$(python3 - "$WORK" "$MODULUS" <<'PY'
import base64, json, subprocess, sys, time
work, modulus = sys.argv[1], sys.argv[2]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
jwks = {"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig",
                  "n": b64(bytes.fromhex(modulus)), "e": "AQAB"}]}
open(f"{work}/jwks.json", "w").write(json.dumps(jwks))
header = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench"}).encode())
claims = b64(json.dumps({"iss": "https://issuer.bench", "sub": "system:serviceaccount:default:bench",
                         "aud": "messaging.knative.dev/channel/default/bench0",
                         "exp": int(time.time()) + 3600}).encode())
signing = f"{header}.{claims}".encode()
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{work}/jwt.key"], input=signing,
                     capture_output=True, check=True).stdout
print(f"{header}.{claims}.{b64(sig)}")
PY
)

send() { # url [extra loadgen flags]
  local url=$1; shift
  "$BIN/loadgen" send --url "$url" --duration "$DURATION" --concurrency "$CONCURRENCY" --size 1024 "$@"
}

manifests 1 1 "$SUB" "$WORK/bench.yaml"
TLS=$(free_port)
DISPATCHER_ARGS="--transport-encryption permissive --tls-listen 127.0.0.1:$TLS --tls-cert $WORK/tls.crt --tls-key $WORK/tls.key" \
  start_dispatcher "$WORK/bench.yaml"
echo "(a) HTTP ingress" >&2
A=$(send "http://127.0.0.1:$INGRESS/default/bench0")
echo "(b) HTTPS ingress" >&2
B=$(send "https://127.0.0.1:$TLS/default/bench0" --ca "$WORK/ca.pem")
stop_dispatcher

printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata: {authentication-oidc: enabled}\n' > "$WORK/oidc.yaml"
cat "$WORK/bench.yaml" >> "$WORK/oidc.yaml"
DISPATCHER_ARGS="--oidc-issuer https://issuer.bench --oidc-jwks $WORK/jwks.json" \
  start_dispatcher "$WORK/oidc.yaml"
echo "(c) HTTP ingress with OIDC" >&2
C=$(send "http://127.0.0.1:$INGRESS/default/bench0" --bearer "$TOKEN")
stop_dispatcher

python3 - "$A" "$B" "$C" <<'PY' | tee "$OUT/security.json"
import json, sys
a, b, c = (json.loads(x) for x in sys.argv[1:4])
rate = lambda r: r["accepted_per_s"]
print(json.dumps({
    "http": a, "https": b, "oidc": c,
    "https_vs_http": round(rate(b) / rate(a), 3),
    "oidc_vs_http": round(rate(c) / rate(a), 3),
}, indent=2))
PY
