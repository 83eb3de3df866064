# Two commands set everything up: `make demo` and `make test` (each installs what it needs).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(abspath $(VENV))/bin
COLL := .collections/ansible_collections/llmops
export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(abspath .collections)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
export PYTHONDONTWRITEBYTECODE := 1
DOCKERD := tools/testhost/dockerd.sh
PYTEST := $(BIN)/pytest -p no:cacheprovider

.PHONY: setup host-deps test test-fast test-live test-matrix sanity lint changelog ee demo bench faults images clean

# requirements-dev.txt: every pin of the development venv (the collection's own run-time ranges are
# in meta/requirements.txt, for users' execution environments).
$(VENV)/.stamp: requirements-dev.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

$(COLL)/vastai:
	mkdir -p $(COLL)
	ln -sfn $(abspath .) $(COLL)/vastai

setup: $(VENV)/.stamp $(COLL)/vastai

host-deps:
	tools/setup-host.sh

# Quick loop while developing: no Docker, no Molecule, no end-to-end.
test-fast: setup
	$(PYTEST) -q -m "not faults and not slow" tests/unit tests/tools/vastsim tests/integration

# Every test, under the project's own Docker engine (started and stopped here): unit, simulator
# conformance (official CLI), modules and inventory against the simulator, images and the
# simulator's docker hosts, Molecule scenarios for the roles, end-to-end playbooks, campaign
# samples; then ansible-lint and ansible-test sanity.
test: setup host-deps
	$(DOCKERD) run $(PYTEST) -q -m "not faults and not slow" tests
	$(MAKE) --no-print-directory lint sanity
	# the oldest supported ansible-core (the venv above is the newest): requires_ansible is tested
	tools/test-matrix.sh core217

# A short scenario against the real API; needs VAST_API_KEY, LIVE_MAX_DPH and LIVE_MAX_SPEND
# (README "Live check"). tests/live/test_live_sim.py runs the same script against the simulator.
test-live: setup
	tools/test_live.sh

# The gates a user or reviewer runs, on the whole collection, no ignore files:
# ansible-lint at the collection root, ansible-test sanity on the built collection (what ships).
lint: setup
	ansible-lint --profile production

sanity: setup
	tests/sanity/run.sh

# Changelog fragments (changelogs/fragments/*.yml) checked, CHANGELOG.rst regenerated from them.
changelog: setup
	antsibull-changelog lint
	antsibull-changelog generate

# The quick suite on the oldest and the newest supported ansible-core, each in its own venv
# (.venv-core<version>): what meta/runtime.yml's requires_ansible claims is what is tested.
test-matrix: setup
	tools/test-matrix.sh

# The execution environment built with ansible-builder on a locally made Debian base, then
# provision.yml (container mode) and idle_shutdown.yml --check run inside it against the simulator.
ee: setup host-deps
	$(DOCKERD) run $(PYTEST) -q tests/packaging/test_ee.py

demo: setup host-deps
	$(DOCKERD) run tools/demo.sh

bench: setup host-deps
	$(DOCKERD) run $(PY) -m tests.bench $(BENCH)

# The full campaigns; the replacement campaign (test_replace_campaign.py) needs the Docker engine
# (container-mode instances are real containers): about 20 s a run, REPLACE_STRIDE=N to thin it.
faults: setup host-deps
	$(DOCKERD) run $(PYTEST) -q -m faults tests/campaigns

images: setup host-deps
	$(DOCKERD) run tools/testhost/build.sh all

clean:
	rm -rf $(VENV) .venv-core* .collections tests/output build
