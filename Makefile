# Every entry point of the project. CI runs `make test` and nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install run test lint fmt bench clean

# The environment is rebuilt whenever pyproject.toml changes.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

## make run: embedded PostgreSQL + broker + every service; Ctrl-C stops all.
run: install
	$(BIN)/python -m shared.launcher run

## make test: the whole suite against real PostgreSQL, broker and HTTP.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make lint: ruff (lint + format check), mypy, import boundaries.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## make bench: every benchmark under bench/, each beside its baseline.
bench: install
	$(BIN)/python -m bench.intake
	$(BIN)/python -m bench.queue
	$(BIN)/python -m bench.metrics
	$(BIN)/python -m bench.nurture

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache *.egg-info
