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

.PHONY: setup host-deps test test-fast test-docker sanity lint demo bench faults clean

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

# Everything that needs no Docker: unit tests, simulator conformance, modules and inventory
# against the simulator.
test-fast: setup
	$(PYTEST) -q tests/unit tests/tools tests/integration

# Real hosts: images, Molecule scenarios for the roles, end-to-end playbooks.
test-docker: setup host-deps
	$(DOCKERD) run $(PYTEST) -q tests/roles tests/e2e

test: setup host-deps
	$(PYTEST) -q tests/unit tests/tools tests/integration
	$(DOCKERD) run $(PYTEST) -q tests/roles tests/e2e

demo: setup host-deps
	$(DOCKERD) run tools/demo.sh

bench: setup host-deps
	$(DOCKERD) run $(PY) -m tests.bench $(BENCH)

faults: setup
	$(PYTEST) -q tests/campaigns -m faults

clean:
	rm -rf $(VENV) .collections tests/output
