#!/usr/bin/env bash
# Start/stop the project's own Docker engine (no systemd on the CI host, see shared/test-infra.md).
# Its data root persists so images built once (keyed by recipe hash) are reused by later runs.
#   tools/testhost/dockerd.sh start   -> prints DOCKER_HOST; no-op if already up
#   tools/testhost/dockerd.sh stop    -> stops it (containers it ran are stopped by dockerd)
#   tools/testhost/dockerd.sh run CMD -> start if needed, run CMD with DOCKER_HOST set, stop if we started it
set -euo pipefail
STATE=${LLMOPS_DOCKER_STATE:-/run/llmops-vastai}
DATA=${LLMOPS_DOCKER_DATA:-/var/lib/llmops-vastai/docker}
SOCK="$STATE/docker.sock"
PIDFILE="$STATE/docker.pid"
export DOCKER_HOST="unix://$SOCK"

up() { [ -S "$SOCK" ] && docker version >/dev/null 2>&1; }

start() {
  if up; then echo "$DOCKER_HOST"; return 0; fi
  command -v dockerd >/dev/null || { echo "dockerd missing: run tools/setup-host.sh" >&2; exit 1; }
  mkdir -p "$STATE" "$DATA"
  rm -f "$SOCK" "$PIDFILE"
  nohup dockerd --data-root "$DATA" --exec-root "$STATE/exec" --pidfile "$PIDFILE" \
    -H "$DOCKER_HOST" --storage-driver overlay2 >"$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 1 100); do up && { echo "$DOCKER_HOST"; return 0; }; sleep 0.2; done
  echo "dockerd did not come up; last log lines:" >&2; tail -n 20 "$STATE/dockerd.log" >&2; exit 1
}

stop() {
  [ -f "$PIDFILE" ] || return 0
  pid=$(cat "$PIDFILE")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE" "$SOCK"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run)
    shift
    started=0
    up || { start >/dev/null; started=1; }
    rc=0; "$@" || rc=$?
    [ "$started" = 1 ] && stop
    exit "$rc" ;;
  *) echo "usage: $0 start|stop|run CMD..." >&2; exit 2 ;;
esac
