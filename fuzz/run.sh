#!/usr/bin/env bash
# Run every fuzz target for a bounded time: `bash fuzz/run.sh [SECONDS_PER_TARGET]`
# (default 30). Builds once, then runs each target on a temporary copy of
# its committed seed corpus (fuzz/corpus/<target>/), so runs never grow or
# change what is committed and the script can run any number of times.
# Exits non-zero when any target crashes (a panic, a failed assertion, a
# sanitizer report, a timeout or running out of memory), after printing the
# crashing input's path (kept under fuzz/artifacts/<target>/) and its
# base64. See docs/fuzzing.md.
#
# Environment: FUZZ_TARGETS="a b" runs only those targets; FUZZ_KEEP=1
# keeps the temporary corpora (their path is printed).
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET=${1:-30}
if ! [[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET]  (a positive integer, default 30)" >&2
  exit 2
fi

log() { printf '\n=== %s\n' "$*"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

# Each target and the longest input libFuzzer may make for it: room for
# the largest seed and some growth, small enough to keep runs fast.
declare -A MAX_LEN=(
  [http_decode]=4096
  [structured_json]=4096
  [manifests]=16384
  [contract]=8192
  [sources_contract]=4096
  [cesql]=1024
  [trigger_filter]=2048
)
# Dictionaries (fuzz/dict/) of tokens libFuzzer splices into inputs.
declare -A DICT=(
  [http_decode]=http.dict
  [structured_json]=json.dict
  [manifests]=yaml.dict
  [contract]=json.dict
  [sources_contract]=json.dict
  [cesql]=cesql.dict
  [trigger_filter]=json.dict
)
ALL_TARGETS=(http_decode structured_json manifests contract sources_contract cesql trigger_filter)
read -r -a TARGETS <<<"${FUZZ_TARGETS:-${ALL_TARGETS[*]}}"
for t in "${TARGETS[@]}"; do
  [[ -n ${MAX_LEN[$t]:-} ]] || { echo "unknown fuzz target: $t" >&2; exit 2; }
done

# cargo-fuzz builds with nightly-only rustc flags (-Zsanitizer=address and
# the -Cllvm-args=-sanitizer-coverage-* instrumentation libFuzzer needs).
# The project pins no nightly toolchain and CI has only stable, whose
# compiler accepts those flags when RUSTC_BOOTSTRAP=1 is set. It is set for
# this build only, which has its own target directory (fuzz/target), so no
# other build of the project is affected.
export RUSTC_BOOTSTRAP=1
HOST=$(rustc -vV | sed -n 's/^host: //p')
log "build (cargo fuzz build, address sanitizer, debug assertions)"
cargo fuzz build --debug-assertions --target "$HOST"
BIN_DIR=target/$HOST/release

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kn-fuzz.XXXXXX")
if [[ -z ${FUZZ_KEEP:-} ]]; then
  trap 'rm -rf "$WORK"' EXIT
else
  echo "temporary corpora kept in $WORK"
fi

failed=()
summary=()
for t in "${TARGETS[@]}"; do
  log "fuzz $t for ${SECONDS_PER_TARGET}s (max_len ${MAX_LEN[$t]})"
  corpus=$WORK/corpus/$t
  mkdir -p "$corpus" "artifacts/$t"
  cp corpus/"$t"/* "$corpus"/
  # Artifacts of earlier runs stay; only the ones this run writes count.
  marker=$WORK/$t.start
  touch "$marker"
  status=0
  "$BIN_DIR/$t" "$corpus" \
    -dict="dict/${DICT[$t]}" \
    -max_total_time="$SECONDS_PER_TARGET" \
    -max_len="${MAX_LEN[$t]}" \
    -rss_limit_mb=2048 \
    -timeout=10 \
    -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" \
    >"$WORK/$t.log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$t.log" | tail -n 1)
  secs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$WORK/$t.log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+' "$WORK/$t.log" | tail -n 1 || true)
  line=$(printf '%-17s runs %-9s exec/s %-7s %-10s corpus %3d seeds -> %d' \
    "$t" "${runs:-?}" "${secs:-?}" "${cov:-cov: ?}" \
    "$(find "corpus/$t" -type f | wc -l)" "$(find "$corpus" -type f | wc -l)")
  if ((status != 0)); then
    failed+=("$t")
    summary+=("$line  CRASH (exit $status)")
    # What went wrong (the panic message or the sanitizer's report, with
    # the top of the stack), then libFuzzer's summary.
    grep -m 1 -A 25 -E "panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)" \
      "$WORK/$t.log" || true
    echo "..."
    grep -v -E '^#[0-9]+\s' "$WORK/$t.log" | tail -n 12
    found=0
    while IFS= read -r artifact; do
      found=1
      echo
      echo "crashing input: fuzz/$artifact"
      echo "base64: $(base64 -w0 "$artifact")"
      echo "reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t $artifact)"
    done < <(find "artifacts/$t" -type f -newer "$marker")
    ((found)) || echo "(no artifact written; the log above says why)"
  else
    summary+=("$line  ok")
  fi
done

log "summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi
