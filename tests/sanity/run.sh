#!/usr/bin/env bash
# ansible-test sanity for the collection. ansible-test needs the collection at a path shaped
# .../ansible_collections/llmops/vastai, so the tracked files are copied into such a temp dir.
#   tests/sanity/run.sh                      # default tests on the module/doc files
#   tests/sanity/run.sh --test pep8 plugins/ # any ansible-test sanity arguments
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$REPO/.venv/bin"
WORK="$(mktemp -d /tmp/sanity.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
DEST="$WORK/ansible_collections/llmops/vastai"
mkdir -p "$DEST"
# Tracked files only (plus untracked-but-not-ignored ones, so a check before commit works).
(cd "$REPO" && git ls-files -co --exclude-standard -z) | rsync -a --from0 --files-from=- "$REPO/" "$DEST/"
cd "$DEST"
git init -q . && git add -A >/dev/null 2>&1 && git -c user.email=s@l -c user.name=sanity commit -qm snapshot >/dev/null
export PATH="$BIN:$PATH"
# ansible-test bootstraps pip in its venvs with a get-pip script from a host outside the package
# registries this project may reach; seed its cache with an ensurepip-based stand-in instead
# (same effect, PyPI only), so no other host is ever contacted.
PIP_VERSION="$(grep -ho "pip='[0-9.]*'" "$BIN"/../lib/python3*/site-packages/ansible_test/_internal/python_requirements.py 2>/dev/null | head -1 | tr -dc '0-9.' || true)"
for v in ${PIP_VERSION:-24.2}; do
  cache="$HOME/.ansible/test/cache/get_pip_${v//./_}.py"
  [ -s "$cache" ] || { mkdir -p "$(dirname "$cache")" && cp "$REPO/tests/sanity/get_pip_offline.py" "$cache"; }
done
if [ "$#" -eq 0 ]; then
  set -- \
    --test validate-modules --test import --test compile --test pep8 --test yamllint \
    --test ansible-doc --test shebang --test line-endings --test no-smart-quotes --test empty-init \
    --test replace-urlopen --test runtime-metadata \
    --test use-argspec-type-path --test pylint \
    plugins/modules/vast_offer_info.py plugins/modules/vast_instance.py \
    plugins/modules/vast_instance_info.py plugins/modules/vast_billing_info.py plugins/modules/vast_ssh_key.py \
    plugins/module_utils/client.py plugins/module_utils/endpoints.py plugins/module_utils/query.py \
    plugins/module_utils/base.py plugins/module_utils/audit.py plugins/doc_fragments/vast.py \
    plugins/inventory/vast.py plugins/filter/
fi
ansible-test sanity --python 3.11 --requirements --color no "$@"
