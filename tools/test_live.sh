#!/usr/bin/env bash
# make test-live: a short scenario against the real vast.ai API (tests/live/scenario.yml).
#
#   VAST_API_KEY=... LIVE_MAX_DPH=0.30 LIVE_MAX_SPEND=0.50 make test-live
#
# Refuses to start without VAST_API_KEY, LIVE_MAX_DPH ($/h cap on the offer) and LIVE_MAX_SPEND
# ($ the run may cost). Whatever happens (failure, Ctrl-C, SIGTERM), everything labelled with this
# run's label is destroyed before the script exits. VAST_URL points it elsewhere (the simulator).
set -u
here="$(cd "$(dirname "$0")/.." && pwd)"
missing=()
[ -n "${VAST_API_KEY:-}" ] || missing+=(VAST_API_KEY)
[ -n "${LIVE_MAX_DPH:-}" ] || missing+=(LIVE_MAX_DPH)
[ -n "${LIVE_MAX_SPEND:-}" ] || missing+=(LIVE_MAX_SPEND)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test-live: refusing to start: set ${missing[*]} (an explicit spend cap is required)" >&2
    exit 2
fi
export LIVE_LABEL="llmops-live-$(date -u +%Y%m%d%H%M%S)-$$"
tmp="$(mktemp -d)"
ssh-keygen -q -t ed25519 -N "" -C llmops-live -f "$tmp/id"
export LIVE_SSH_KEY="$tmp/id"
pb="ansible-playbook"
child=""
cleaned=""
cleanup() {
    [ -n "$cleaned" ] && return
    cleaned=1
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null
        wait "$child" 2>/dev/null
    fi
    echo "test-live: cleaning up everything labelled $LIVE_LABEL"
    "$pb" "$here/tests/live/cleanup.yml" || echo "test-live: CLEANUP FAILED: destroy instances labelled $LIVE_LABEL by hand" >&2
    rm -rf "$tmp"
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT
echo "test-live: run $LIVE_LABEL against ${VAST_URL:-https://console.vast.ai}, cap \$$LIVE_MAX_DPH/h, \$$LIVE_MAX_SPEND total"
"$pb" "$here/tests/live/scenario.yml" &
child=$!
wait "$child"
rc=$?
child=""
cleanup
exit $rc
