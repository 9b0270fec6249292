# natsume-testbed. Main job: `make testbed run`. Tests: `make test`.
# Every target installs what it needs first (Debian packages, then .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SCENARIO ?=
TESTBED_FILE ?= testbed.yaml
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: testbed run test unit integration faults soak bench images setup host-deps clean

# `make testbed run`: `testbed` prepares the host, `run` runs the default scenario.
testbed: setup

run: setup
	$(PY) -m orchestrator --file $(TESTBED_FILE) run $(SCENARIO)

# The fault table (about 25 min of real boots) runs with `make faults`, not in `make test`.
test: setup
	$(PY) -m pytest -v -m "not faults" tests

unit: setup
	$(PY) -m pytest -v -m "not integration" tests

integration: setup
	$(PY) -m pytest -v -m "integration and not faults" tests

faults: setup
	$(PY) -m pytest -v -s -m faults tests/integration/test_faults.py

# Each variant booted N times (default 10) with a short measurement: hang and failure rates.
soak: setup
	$(PY) -m orchestrator --file $(TESTBED_FILE) soak $(SCENARIO) --runs $(or $(RUNS),10)

bench: setup
	$(PY) tests/bench_boot.py

images: setup
	$(PY) -m orchestrator images

setup: host-deps $(STAMP)

host-deps:
	@bash images/install-host-deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf build .pytest_cache
