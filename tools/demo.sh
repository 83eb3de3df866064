#!/usr/bin/env bash
# make demo: the user's day on the bundled vast.ai simulator, with real containers as instances.
#   start the simulator (--hosts docker) -> provision a budget instance (roles, /health 200
#   through nginx) -> chat completion through nginx -> advance the simulated clock -> idle
#   shutdown (dry run, then for real) -> the instance is stopped -> cost report -> teardown.
# Needs a Docker engine (make demo runs it under tools/testhost/dockerd.sh). Cleans up on exit.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PATH="$REPO/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$REPO/ansible.cfg" ANSIBLE_COLLECTIONS_PATH="$REPO/.collections"
export ANSIBLE_PIPELINING=True ANSIBLE_HOST_KEY_CHECKING=False PYTHONDONTWRITEBYTECODE=1
export DOCKER_HOST="${DOCKER_HOST:-unix:///run/llmops-vastai/docker.sock}"

T0=$(date +%s)
WORK="$(mktemp -d /tmp/llmops-demo.XXXXXX)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# a throwaway key for the simulator; never printed
API_KEY="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
SIM_PID=""
LABEL=llm-demo

step() { printf '\n\033[1m==> [%3ss] %s\033[0m\n' "$(( $(date +%s) - T0 ))" "$*"; }

cleanup() {
  local rc=$?
  if [[ -n "$SIM_PID" ]] && kill -0 "$SIM_PID" 2>/dev/null; then
    # destroy what is left through the API, then stop the simulator (it removes its containers)
    python3 - "$PORT" "$API_KEY" <<'EOF' || true
import json, sys, urllib.request
port, key = sys.argv[1], sys.argv[2]
state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/state", timeout=10))
for inst in state["instances"]:
    if inst.get("actual_status") != "destroyed":
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v0/instances/{inst['id']}/", method="DELETE",
                                     headers={"Authorization": "Bearer " + key})
        urllib.request.urlopen(req, timeout=30).read()
EOF
    kill "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  printf '\n==> demo %s after %ss (cleaned up)\n' "$([[ $rc == 0 ]] && echo finished || echo FAILED)" "$(( $(date +%s) - T0 ))"
  exit $rc
}
trap cleanup EXIT INT TERM

step "Images (built once, then cached)"
python3 -c 'from tests.helpers.images import ensure_images; ensure_images()'

step "Simulator on 127.0.0.1:$PORT with --hosts docker (instances are real systemd containers)"
tools/vastsim --port "$PORT" --api-key "$API_KEY" --hosts docker --speed 20 >"$WORK/vastsim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/_sim/health" >/dev/null 2>&1 && break; sleep 0.2; done
export VAST_URL="http://127.0.0.1:$PORT" VAST_API_KEY="$API_KEY"
# the controller's SSH key and the endpoint tokens go to a throwaway HOME, not yours
export HOME="$WORK/home" VAST_AUDIT_LOG="$WORK/audit.jsonl"
export ANSIBLE_PRIVATE_KEY_FILE="$HOME/.ssh/llmops_vastai_ed25519"
mkdir -p "$HOME"

step "No registry here: the engine image travels to the host as an archive"
docker save vllm/vllm-openai:v0.33.0 | gzip -1 >"$WORK/engine.tar.gz"

step "Provision a budget-profile instance (offer search, preflight, rent, roles, /health through nginx)"
ansible-playbook playbooks/provision.yml -e vast_profile=budget -e instance_label=$LABEL \
  -e llmops_engine_image_archive="$WORK/engine.tar.gz"

step "A chat completion through nginx (bearer token read from its 0600 file, not shown)"
ENDPOINT="$(python3 - "$PORT" "$API_KEY" "$LABEL" <<'EOF'
import json, sys, urllib.request
port, key, label = sys.argv[1:]
req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/instances/", headers={"Authorization": "Bearer " + key})
rows = json.load(urllib.request.urlopen(req, timeout=30))["instances"]
row = next(r for r in rows if r["label"] == label)
p = row["ports"]["80/tcp"]
print("http://127.0.0.1:%s" % (p[0]["HostPort"] if isinstance(p, list) else p))
EOF
)"
TOKEN_FILE="$HOME/.config/llmops-vastai/tokens/$LABEL.token"
# the header goes through a 0600 file so the token is on no command line either
(umask 077; printf 'Authorization: Bearer %s\n' "$(cat "$TOKEN_FILE")" >"$WORK/auth.header")
echo "POST $ENDPOINT/v1/chat/completions"
curl -fsS "$ENDPOINT/v1/chat/completions" -H @"$WORK/auth.header" \
  -H 'Content-Type: application/json' \
  -d '{"model": "qwen2.5-1.5b-instruct", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}' \
  | python3 -c 'import json,sys; r=json.load(sys.stdin); print("answer:", r["choices"][0]["message"]["content"], "| usage:", r["usage"])'
echo "without the token: HTTP $(curl -s -o /dev/null -w '%{http_code}' "$ENDPOINT/v1/models")"

step "Advance the simulated clock by 2 hours (billing and the boot grace move; the host's idle clock is real time)"
curl -fsS -X POST "http://127.0.0.1:$PORT/_sim/clock/advance" -d '{"seconds": 7200}'; echo
echo "waiting 65 s of real inactivity (idle_minutes=1 for the demo; default 30)"
sleep 65
END="$(curl -fsS "http://127.0.0.1:$PORT/_sim/clock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["now"] + 86400)')"

cat >"$WORK/demo.vast.yml" <<EOF
plugin: llmops.vastai.vast
statuses: [running]
EOF

# The simulated clock jumped 2 h ahead of the host's: the host-vs-API clock check would rightly
# refuse to decide, so it is off for the demo (idle_shutdown_max_clock_skew_minutes=0).
step "Idle shutdown, dry run (--check): lists what would stop"
ansible-playbook -i "$WORK/demo.vast.yml" playbooks/idle_shutdown.yml --check \
  -e idle_shutdown_idle_minutes=1 -e idle_shutdown_max_clock_skew_minutes=0 -e vast_billing_end="$END"

step "Idle shutdown (what the AWX schedule runs every 5 minutes)"
ansible-playbook -i "$WORK/demo.vast.yml" playbooks/idle_shutdown.yml \
  -e idle_shutdown_idle_minutes=1 -e idle_shutdown_max_clock_skew_minutes=0 -e vast_billing_end="$END"

step "The instance is stopped (API) and the audit trail"
curl -fsS -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$PORT/api/v1/instances/" \
  | python3 -c 'import json,sys; [print(r["id"], r["label"], r["actual_status"]) for r in json.load(sys.stdin)["instances"]]'
grep auto_shutdown "$VAST_AUDIT_LOG"

step "Cost report (Markdown and JSON); totals come from the API's billing"
ansible-playbook playbooks/cost_report.yml -e cost_report_dir="$WORK/reports" -e vast_billing_end="$END"
cat "$WORK/reports/cost-report.md"
python3 - "$PORT" "$WORK/reports/cost-report.json" <<'EOF'
import json, sys, urllib.request
ledger = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_sim/ledger", timeout=10))
report = json.load(open(sys.argv[2]))
print("report total $%.2f, simulator ledger $%.2f" % (report["totals"]["total"], ledger["total"]))
EOF

step "Teardown (the guard wants the label repeated)"
ansible-playbook playbooks/teardown.yml -e instance_label=$LABEL -e confirm=$LABEL -e vast_billing_end="$END"
