# userorg — every target creates or reuses .venv and installs the project into it.
# A newcomer needs two commands: `make run` and `make test`.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)
# dev-up writes .env.dev; `make run` then runs against the local production-mode stack.
WITH_DEV_ENV := set -a; if [ -f .env.dev ]; then . ./.env.dev; fi; set +a;

.PHONY: help venv run serve reconcile test test-fast lint fmt migrate rollback schema-drift \
        contract contract-test opa-test bench dev-up dev-down clean

help:
	@echo "make run    - start admin-api (:8081) and reconciler (:8082), embedded mode by default"
	@echo "make test   - the whole test suite (unit, API in both modes, integration, contract)"
	@echo "make lint   - ruff + mypy (strict)"
	@echo "make migrate / rollback / schema-drift / contract / bench / dev-up / dev-down"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
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

contract-test: $(STAMP)
	$(BIN)/python -m pytest -q tests/contract

opa-test: $(STAMP)
	@echo "policy tests arrive with the Rego engine"

bench: $(STAMP)
	$(BIN)/python bench/run.py

dev-up: $(STAMP)
	@echo "dev-up: the local production stack arrives with the operations issue"

dev-down:
	@echo "dev-down: nothing to stop"

clean:
	rm -rf $(VENV) var build *.egg-info
