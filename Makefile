# dbgov — every target creates and fills .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: up test lint bench native clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

## native: compile the hot path with mypyc (a no-op when up to date; see src/dbgov/native.py)
native: $(STAMP)
	$(BIN)/python -m tools.build_native

## up: start the embedded default (embedded PostgreSQL + demo world + proxy + web)
up: native
	$(BIN)/dbgov up

## test: the whole suite against a real embedded PostgreSQL
test: native
	$(BIN)/python -m tools.ensure_debs chromium chromium-driver
	$(BIN)/pytest -q

## lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## bench: direct PostgreSQL vs PgBouncer vs dbgov, same run
bench: native
	$(BIN)/python -m tools.ensure_debs pgbouncer
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build .dbgov .pytest_cache .mypy_cache .ruff_cache
	find src -name '*.so' -delete
