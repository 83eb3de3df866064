#!/usr/bin/env bash
# Plain `ansible-test sanity` on the collection as it ships: the tarball that
# `ansible-galaxy collection build` makes (galaxy.yml's build_ignore decides what ships), unpacked
# at a path shaped .../ansible_collections/llmops/vastai. That is what a user runs on the installed
# collection and what Galaxy's importer checks. Every test, every file, no ignore file.
#   tests/sanity/run.sh                        # the gate (make sanity)
#   tests/sanity/run.sh --test pep8            # any ansible-test sanity arguments (while developing)
#   SANITY_SOURCE=tree tests/sanity/run.sh     # the git tree instead (tests/ and tools/ too; not the gate)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$REPO/.venv/bin"
export PATH="$BIN:$PATH" PYTHONDONTWRITEBYTECODE=1
WORK="$(mktemp -d /tmp/sanity.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
DEST="$WORK/ansible_collections/llmops/vastai"
mkdir -p "$DEST"
if [ "${SANITY_SOURCE:-built}" = tree ]; then
  # Tracked files (plus untracked-but-not-ignored ones, so a check before commit works).
  (cd "$REPO" && git ls-files -co --exclude-standard -z) | rsync -a --from0 --files-from=- "$REPO/" "$DEST/"
else
  ansible-galaxy collection build --force --output-path "$WORK" "$REPO" >/dev/null
  tar -xzf "$WORK"/llmops-vastai-*.tar.gz -C "$DEST"
  rm -f "$WORK"/llmops-vastai-*.tar.gz
fi
cd "$DEST"
git init -q . && git add -A >/dev/null 2>&1 && git -c user.email=s@l -c user.name=sanity commit -qm snapshot >/dev/null
# ansible-test bootstraps pip in its venvs with a get-pip script from a host outside the package
# registries this project may reach; seed its cache with an ensurepip-based stand-in instead
# (same effect, PyPI only), so no other host is ever contacted.
PIP_VERSION="$(grep -ho "pip='[0-9.]*'" "$BIN"/../lib/python3*/site-packages/ansible_test/_internal/python_requirements.py 2>/dev/null | head -1 | tr -dc '0-9.' || true)"
for v in ${PIP_VERSION:-24.2}; do
  cache="$HOME/.ansible/test/cache/get_pip_${v//./_}.py"
  [ -s "$cache" ] || { mkdir -p "$(dirname "$cache")" && cp "$REPO/tests/sanity/get_pip_offline.py" "$cache"; }
done
ansible-test sanity --python 3.11 --requirements --color no "$@"
