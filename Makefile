# emp_hf developer tasks. `make test` is the fast lane (unit and in-process tests, a few minutes); `make test-all`
# is the full suite at the pins (constraints.txt); `make test-latest` is the full suite at the newest releases
# (constraints-latest.txt), in a venv of its own. CI runs both (.ci/run).
PYTHON ?= python
# Tests left out of the fast lane: slow runs and the ones that start fresh processes.
FAST_LANE = -m "not slow and not distributed and not subprocess"
# The newest-releases lane: its own venv, so the pinned install (`make setup`) is never touched.
LATEST_VENV ?= .venv-latest
LATEST_PYTHON = $(LATEST_VENV)/bin/python

.PHONY: setup demo test test-all setup-latest test-latest lint api-docs

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	HF_HUB_OFFLINE=1 $(PYTHON) recipes/demo.py

test: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q $(FAST_LANE)

test-all: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q

$(LATEST_PYTHON):
	$(PYTHON) -m venv $(LATEST_VENV)

setup-latest: $(LATEST_PYTHON)
	PYTHON=$(LATEST_PYTHON) EMP_HF_CONSTRAINTS=constraints-latest.txt bash scripts/setup.sh

# PATH as an activated venv has it, so that the tests' `emp-hf` is the venv's too.
test-latest: setup-latest
	PATH="$(abspath $(LATEST_VENV))/bin:$$PATH" HF_HUB_OFFLINE=1 $(LATEST_PYTHON) -m pytest -q

lint:
	ruff check .
	ruff format --check .

# docs/api.md from scripts/api_template.md and the docstrings (tests/test_api_docs.py checks it is current).
api-docs:
	$(PYTHON) scripts/generate_api_docs.py
