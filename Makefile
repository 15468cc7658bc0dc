# loadgen: everything runs from a local virtual environment in .venv (created on first use).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
SCENARIO ?= scenarios/default.toml
SLO ?= p99(complete) < 500ms
SOAK_DURATION ?= 10m
# `make capacity` alone searches the reference target (a known answer: 300 ops/s).
CAPACITY_SCENARIO = $(if $(filter command line environment,$(origin SCENARIO)),$(SCENARIO),scenarios/reference-capacity.toml)

.DEFAULT_GOAL := help
.PHONY: help run test check lint format bench soak campaign capacity clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed ## set up and run the default campaign on loopback
	$(BIN)/loadgen run scenarios/default.toml

campaign: $(VENV)/.installed ## run a campaign: make campaign SCENARIO=scenarios/x.toml
	$(BIN)/loadgen run $(SCENARIO)

capacity: $(VENV)/.installed ## capacity search: make capacity SCENARIO=... SLO='p99(complete) < 500ms'
	$(BIN)/loadgen capacity $(CAPACITY_SCENARIO) --slo '$(SLO)'

# make bench's optional peer (Locust, the bench extra). Not needed by test or lint, and a
# machine without PyPI still benches: the stamp stays missing and section [11] skips Locust.
$(VENV)/.installed-bench: pyproject.toml | $(VENV)/.installed
	@$(PIP) install --quiet -e '.[bench]' && touch $@ \
	  || echo "make bench: the bench extra (Locust) did not install; its figures are skipped"

test: $(VENV)/.installed-dev ## set up and run the whole test suite
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev ## ruff and mypy (strict on loadgen/)
	$(BIN)/ruff check loadgen tests
	$(BIN)/ruff format --check loadgen tests
	$(BIN)/mypy

check: lint test ## lint, type-check and test

format: $(VENV)/.installed-dev ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix loadgen tests
	$(BIN)/ruff format loadgen tests

bench: $(VENV)/.installed $(VENV)/.installed-bench ## self-benchmark of this machine (prints ratios against in-run references)
	$(BIN)/python -m loadgen.bench

soak: $(VENV)/.installed ## both sides for SOAK_DURATION (10m): RSS, p99, counts per minute; 99 on drift or loss
	$(BIN)/python -m loadgen.bench.soak --duration $(SOAK_DURATION)

clean: ## remove the virtual environment and caches (results/ is kept)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
