#!/usr/bin/env bash
# Remove containers left behind by crashed test runs on the shared engine:
#   - simulator boxes (label llmops-vastai.vastsim=1) whose simulator process is gone;
#   - with --all also every container of tests.helpers.images (label llmops-vastai.test=1)
#     and every simulator box (only when no test run is active!).
# Anonymous volumes (the vast VM stand-in's /var/lib/docker) go with them (rm -v).
set -euo pipefail
export DOCKER_HOST=${DOCKER_HOST:-unix:///run/llmops-vastai/docker.sock}
all=0; [ "${1:-}" = --all ] && all=1
ids=()
while read -r id pid; do
  [ -n "$id" ] || continue
  # Without --all only boxes whose simulator is known and gone (a box without a pid label is kept).
  if [ "$all" = 1 ] || { [ -n "$pid" ] && [ ! -e "/proc/$pid" ]; }; then ids+=("$id"); fi
done < <(docker ps -a --filter label=llmops-vastai.vastsim=1 --format '{{.ID}} {{.Label "llmops-vastai.vastsim.pid"}}')
if [ "$all" = 1 ]; then
  while read -r id; do [ -n "$id" ] && ids+=("$id"); done < <(docker ps -aq --filter label=llmops-vastai.test=1)
fi
if [ ${#ids[@]} -gt 0 ]; then docker rm -f -v "${ids[@]}" >/dev/null; fi
echo "removed ${#ids[@]} container(s)"
