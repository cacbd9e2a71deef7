# userorg — every target creates or reuses .venv and installs the project into it.
# A newcomer needs two commands: `make run` and `make test`.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OPA_BINDINGS_VERSION := 0.4.4
export PATH := $(CURDIR)/$(BIN):$(PATH)
# dev-up writes .env.dev; `make run` then runs against the local production-mode stack.
WITH_DEV_ENV := set -a; if [ -f .env.dev ]; then . ./.env.dev; fi; set +a;

.PHONY: help venv run serve reconcile test test-fast lint fmt migrate rollback schema-drift \
        contract contract-test fuzz audit opa-test bench dev-up dev-down clean

help:
	@echo "make run    - start admin-api (:8081) and reconciler (:8082), embedded mode by default"
	@echo "make test   - the whole test suite (unit, API in both modes, integration, contract)"
	@echo "make lint   - ruff + mypy (strict)"
	@echo "make migrate / rollback / schema-drift / contract / bench"
	@echo "make fuzz   - the long contract-fuzzing run (FUZZ_EXAMPLES=50 per operation and mode)"
	@echo "make dev-up / dev-down - local production-mode stack (PostgreSQL, Redis, Kafka, OpenBao)"

$(STAMP): pyproject.toml constraints.txt Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@# OPA's own Go engine, for checking the policies mean the same on OPA (tests only). Its
	@# wheel declares Python >= 3.14 but is ctypes over a c-shared library: works on 3.11.
	$(BIN)/python -m pip install --quiet --ignore-requires-python --no-deps \
		"opa-golib-python-bindings==$(OPA_BINDINGS_VERSION)"
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(WITH_DEV_ENV) $(BIN)/userorg run

serve: $(STAMP)
	$(BIN)/userorg serve

reconcile: $(STAMP)
	$(BIN)/userorg reconcile

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:randomly $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/hadolint deploy/Dockerfile
	$(MAKE) --no-print-directory audit

# Known vulnerabilities in the installed dependencies (PyPI's advisory data). Accepted findings
# are listed, each with its reason, in pip-audit-ignore.txt (see docs/security.md).
audit: $(STAMP)
	@$(BIN)/pip-audit --progress-spinner off --skip-editable --format json \
		$$(grep -Eo '^[A-Za-z0-9-]+' pip-audit-ignore.txt | sed 's/^/--ignore-vuln /') \
		2>/dev/null | $(BIN)/python .ci/audit_summary.py

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

migrate: $(STAMP)
	$(BIN)/userorg migrate

rollback: $(STAMP)
	$(BIN)/userorg rollback

schema-drift: $(STAMP)
	$(BIN)/userorg schema-drift

contract: $(STAMP)
	$(BIN)/userorg openapi --output contracts/openapi.yaml
	$(BIN)/userorg declarative schema --output docs/schema/declarative-v1.json

# The long contract-fuzzing run (make test runs a small fixed-seed budget of the same test).
FUZZ_EXAMPLES ?= 50
fuzz: $(STAMP)
	USERORG_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -s -p no:randomly \
		tests/api/test_contract_fuzz.py::test_contract_fuzz \
		tests/api/test_contract_fuzz.py::test_contract_fuzz_as_platform_admin

contract-test: $(STAMP)
	$(BIN)/python -m pytest -q tests/contract

opa-test: $(STAMP)
	$(BIN)/userorg policy test policies
	$(BIN)/userorg policy test policies --engine opa --quiet

bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get install -y wrk || (apt-get update && apt-get install -y wrk))
	$(BIN)/python bench/run.py $(BENCH)

# PostgreSQL (the machine's, or a private cluster), Redis, Kafka (tansu) and OpenBao under
# var/dev; writes .env.dev. DEV_ARGS passes options (e.g. DEV_ARGS=--private-postgres).
dev-up: $(STAMP)
	$(BIN)/userorg dev up $(DEV_ARGS)

# Stops everything dev-up started (pid files under var/dev). DEV_ARGS=--purge drops the data.
dev-down:
	@if [ -x $(BIN)/userorg ]; then $(BIN)/userorg dev down $(DEV_ARGS); \
	else echo "dev-down: nothing to stop"; fi

clean:
	rm -rf $(VENV) var build *.egg-info
