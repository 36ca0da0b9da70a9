# emp_hf developer tasks. `make test` is the fast lane (unit and in-process tests, a few minutes); `make test-all`
# is the full suite, which CI runs (.ci/run).
PYTHON ?= python
# Tests left out of the fast lane: slow runs and the ones that start fresh processes.
FAST_LANE = -m "not slow and not distributed and not subprocess"

.PHONY: setup demo test test-all lint

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	HF_HUB_OFFLINE=1 $(PYTHON) recipes/demo.py

test: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q $(FAST_LANE)

test-all: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q

lint:
	ruff check .
	ruff format --check .
