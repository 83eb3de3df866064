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

.PHONY: setup host-deps test test-fast test-live sanity lint demo bench faults images clean

$(VENV)/.stamp: requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
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

# A short scenario against the real API; needs VAST_API_KEY, LIVE_MAX_DPH and LIVE_MAX_SPEND
# (README "Live check"). tests/live/test_live_sim.py runs the same script against the simulator.
test-live: setup
	tools/test_live.sh

lint: setup
	ansible-lint --profile production playbooks/ roles/

sanity: setup
	tests/sanity/run.sh

demo: setup host-deps
	$(DOCKERD) run tools/demo.sh

bench: setup host-deps
	$(DOCKERD) run $(PY) -m tests.bench $(BENCH)

faults: setup
	$(PYTEST) -q -m faults tests/campaigns

images: setup host-deps
	$(DOCKERD) run tools/testhost/build.sh all

clean:
	rm -rf $(VENV) .collections tests/output
