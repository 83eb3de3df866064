#!/usr/bin/env bash
# The quick suite on the oldest and the newest supported ansible-core (meta/runtime.yml's
# requires_ansible), each in its own venv .venv-<name> with the Python given on its `#matrix`
# line of requirements-dev.txt (the one place for pins). Venvs are reused while that file is
# unchanged. Quick suite: unit tests, ansible-doc on the installed tarball, the inventory plugin
# and a few module scenarios through real ansible-inventory / ansible-playbook runs against the
# simulator (lifecycle and idempotence, check mode, argument validation, secrets at -vvv, lost
# create answer, billing).
#   tools/test-matrix.sh [NAME...]      (default: every #matrix line)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQ="$ROOT/requirements-dev.txt"
cd "$ROOT"
# Pins shared with the dev venv: what the collection and the quick suite import.
SHARED="requests urllib3 PyYAML Jinja2 prometheus-client ansible-runner pytest pytest-timeout hypothesis"
M=tests/integration/plugins/modules/test_modules.py
QUICK=(tests/unit tests/packaging/test_docs.py tests/integration/plugins/inventory/test_vast_inventory.py
       "$M::test_lifecycle_every_state_and_idempotence" "$M::test_check_mode_changes_nothing_and_diff"
       "$M::test_invalid_arguments_fail_before_any_api_call" "$M::test_key_never_in_output_at_vvv"
       "$M::test_lost_create_response_rents_exactly_once" "$M::test_billing_matches_the_ledger")
log() { printf '[matrix %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

find_python() { # python3.10 -> an interpreter of that version that runs (pyenv's, then PATH)
  local want=$1 v=${1#python} p
  for p in "$HOME"/.pyenv/versions/"$v".*/bin/"$want" /usr/bin/"$want" /usr/local/bin/"$want"; do
    [ -x "$p" ] && "$p" -c 'import venv, ssl' 2>/dev/null && { echo "$p"; return 0; }
  done
  return 1
}

mapfile -t LINES < <(sed -n 's/^#matrix //p' "$REQ")
[ "${#LINES[@]}" -gt 0 ] || { echo "no #matrix lines in $REQ" >&2; exit 2; }
status=0
for line in "${LINES[@]}"; do
  read -r name py pins <<<"$line"
  if [ "$#" -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  venv="$ROOT/.venv-$name"
  python=$(find_python "$py") || { echo "$py not found (PATH or ~/.pyenv/versions): cannot test $name" >&2; exit 1; }
  want=$(printf '%s\n' $pins; for n in $SHARED; do grep -iE "^${n}==" "$REQ"; done)
  stamp="$venv/.matrix-stamp"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "$name: venv with $py ($("$python" --version)), $(echo $pins)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q $want 2>&1 | grep -v "^WARNING: Location" | tail -n 5 >&2 || true
    "$venv/bin/python" -c "import ansible, ansible_collections.ansible.posix" || exit 1
    echo "$want" >"$stamp"
  fi
  core=$("$venv/bin/python" -c "from ansible.release import __version__; print(__version__)")
  log "$name: ansible-core $core on $("$venv/bin/python" --version)"
  t0=$SECONDS
  if LLMOPS_VENV_BIN="$venv/bin" "$venv/bin/python" -m pytest -p no:cacheprovider -q -m "not faults and not slow" \
      --durations=0 "${QUICK[@]}" >"$venv/last-run.log" 2>&1; then
    log "$name: $(grep -E '^[0-9]+ passed' "$venv/last-run.log" | tail -1) ($((SECONDS - t0)) s)"
  else
    tail -n 40 "$venv/last-run.log" >&2
    log "$name: FAILED ($((SECONDS - t0)) s), log: $venv/last-run.log"
    status=1
  fi
done
exit $status
