# emp_hf developer tasks. `make test` is what CI runs (.ci/run).
PYTHON ?= python

.PHONY: setup demo test lint

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m emp_hf.demo

test: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m pytest -q

lint:
	ruff check .
	ruff format --check .
