#!/usr/bin/env bash
# Build the locally made test images (no registry here: everything comes FROM a debootstrapped
# Debian base). Idempotent: each image is tagged with a hash of its recipe and skipped when that
# tag exists; the debootstrap tarball is cached under $LLMOPS_CACHE.
#   tools/testhost/build.sh [base|testhost|vastvm|standin|all]   (default: all)
#   tools/testhost/build.sh --print-tags                          (name=tag lines, builds nothing)
# Needs DOCKER_HOST pointing at a running engine (tools/testhost/dockerd.sh start).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${LLMOPS_CACHE:-/var/cache/llmops-vastai}
MIRROR=${LLMOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# The tag the vllm_stack role deploys by default; the stand-in carries it too.
VLLM_IMAGE=${LLMOPS_VLLM_IMAGE:-vllm/vllm-openai:v0.33.0}

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
sha() { sha256sum | cut -c1-12; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

# Recipe hashes chain: a change in the base changes every image built on it.
DEBOOTSTRAP_KEY=$(printf 'debootstrap --variant=minbase %s %s v1' "$SUITE" "$MIRROR" | sha)
# What the base image leaves out of the debootstrap tarball: downloaded .debs, apt lists, docs,
# man pages and locales (~110 MB that every image and every `docker save | docker load` would carry).
STRIP=('./var/cache/apt/archives/*.deb' './var/lib/apt/lists/*' './usr/share/doc/*' './usr/share/man/*' './usr/share/locale/*')
BASE_KEY=$(printf '%s strip:%s' "$DEBOOTSTRAP_KEY" "${STRIP[*]}" | sha)
BASE_IMG=local/llmops-debian:$SUITE-$BASE_KEY
recipe_hash() { # $1 parent hash, rest: files/dirs of the recipe
  local parent=$1; shift
  { echo "$parent"; find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum | sed "s#$ROOT/##"; } | sha
}
TESTHOST_KEY=$(recipe_hash "$BASE_KEY" "$HERE/images/testhost")
VASTVM_KEY=$(recipe_hash "$TESTHOST_KEY" "$HERE/images/vastvm")
STANDIN_KEY=$(recipe_hash "$BASE_KEY" "$HERE/images/standin" "$ROOT/tools/engine_standin/vllm_standin.py" \
  "$ROOT/tools/engine_standin/vllm_flags.py" "$ROOT/tools/engine_standin/vllm_flags.json")

build_base() {
  have "$BASE_IMG" && { log "base $BASE_IMG cached"; return 0; }
  local tar="$CACHE/debootstrap-$SUITE-minbase-$DEBOOTSTRAP_KEY.tar"
  if [ ! -s "$tar" ]; then
    command -v debootstrap >/dev/null || { echo "debootstrap missing: run tools/setup-host.sh" >&2; exit 1; }
    mkdir -p "$CACHE"
    ROOTFS=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    trap 'rm -rf "$ROOTFS"' EXIT
    log "debootstrap $SUITE minbase (about 30 s)"
    debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
    # Temporary names then rename: an interrupted run never leaves a half tarball behind.
    tar -C "$ROOTFS" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$ROOTFS"
  fi
  log "import $tar as $BASE_IMG"
  local slim; slim=$(mktemp "$CACHE/base.XXXXXX.tar")
  cp "$tar" "$slim"
  tar --delete --wildcards --wildcards-match-slash -f "$slim" "${STRIP[@]}" 2>/dev/null || true
  docker import "$slim" "$BASE_IMG" >/dev/null
  rm -f "$slim"
}

build_one() { # name key dir [extra build args...]
  local name=$1 key=$2 dir=$3; shift 3
  if have "local/$name:$key"; then
    log "$name:$key cached"
  else
    log "build $name:$key"
    local t0=$SECONDS
    local blog="$CACHE/build-$name.log"
    mkdir -p "$CACHE"
    # Output goes to a log (the legacy builder warns on every run); shown only on failure.
    docker build --force-rm --build-arg "BASE=$BASE_IMG" "$@" -t "local/$name:$key" "$dir" >"$blog" 2>&1 \
      || { tail -n 30 "$blog" >&2; echo "build of $name failed; full log: $blog" >&2; exit 1; }
    log "built $name in $((SECONDS - t0)) s"
  fi
  docker tag "local/$name:$key" "local/$name:latest"
}

build_testhost() { build_base; build_one llmops-testhost "$TESTHOST_KEY" "$HERE/images/testhost"; }
build_vastvm() {
  build_testhost
  build_one llmops-vastvm "$VASTVM_KEY" "$HERE/images/vastvm" --build-arg "TESTHOST=local/llmops-testhost:$TESTHOST_KEY"
}
build_standin() {
  build_base
  # The app lives in tools/engine_standin; copy it into a private context with the Dockerfile.
  local ctx; ctx=$(mktemp -d)
  cp "$HERE/images/standin/"* "$ROOT/tools/engine_standin/vllm_standin.py" "$ROOT/tools/engine_standin/vllm_flags.py" \
    "$ROOT/tools/engine_standin/vllm_flags.json" "$ctx/"
  build_one llmops-engine-standin "$STANDIN_KEY" "$ctx"
  rm -rf "$ctx"
  docker tag "local/llmops-engine-standin:$STANDIN_KEY" "$VLLM_IMAGE"
}

print_tags() {
  echo "base=$BASE_IMG"
  echo "testhost=local/llmops-testhost:$TESTHOST_KEY"
  echo "vastvm=local/llmops-vastvm:$VASTVM_KEY"
  echo "standin=local/llmops-engine-standin:$STANDIN_KEY"
  echo "vllm=$VLLM_IMAGE"
}

# Parallel test sessions share the engine: one build at a time, the others then find the tags.
if [ "${1:-all}" != --print-tags ]; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/build.lock"
  flock 9
fi

case "${1:-all}" in
  base) build_base ;;
  testhost) build_testhost ;;
  vastvm) build_vastvm ;;
  standin) build_standin ;;
  all) build_vastvm; build_standin ;;
  --print-tags) print_tags ;;
  *) echo "usage: $0 [base|testhost|vastvm|standin|all|--print-tags]" >&2; exit 2 ;;
esac
