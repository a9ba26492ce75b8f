# dbgov — every target creates and fills .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

## up: start the embedded default (embedded PostgreSQL + demo world + proxy + web)
up: $(STAMP)
	$(BIN)/dbgov up

## test: the whole suite against a real embedded PostgreSQL
test: $(STAMP)
	$(BIN)/python -m tools.ensure_debs chromium chromium-driver
	$(BIN)/pytest -q

## lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## bench: direct PostgreSQL vs PgBouncer vs dbgov, same run
bench: $(STAMP)
	$(BIN)/python -m tools.ensure_debs pgbouncer
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .dbgov .pytest_cache .mypy_cache .ruff_cache
