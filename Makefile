# Every entry point of the project. CI runs `make test` and nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install run test lint fmt bench clean browser promtool demo

# The environment is rebuilt whenever pyproject.toml changes.
$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

## make run: embedded PostgreSQL + broker + every service; Ctrl-C stops all.
run: install
	$(BIN)/python -m shared.launcher run

## make demo: a simulated call floor against the stack `make run` started (or
## one of its own): CRMs post leads, agents dial, then a penetration report.
## Options through DEMO_ARGS, e.g. `make demo DEMO_ARGS="--agents 3 --rate 2"`.
demo: install
	$(BIN)/python -m demo $(DEMO_ARGS)

## make browser: Chromium and its driver for the manager page's browser test.
## Installs Debian's chromium + chromium-driver when missing and it can (root
## with apt-get); otherwise says so and carries on: that one test then skips.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		echo "browser: chromium and chromedriver are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "browser: installing chromium and chromium-driver with apt-get"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install \
			-y -qq --no-install-recommends chromium chromium-driver >/dev/null; } \
		|| echo "browser: apt-get could not install chromium; the browser test will skip"; \
	else \
		echo "browser: chromium not installed and cannot install it here (needs root" \
			"and apt-get); the browser test will skip"; \
	fi

## make promtool: Prometheus's promtool, which checks the alert rules and the
## services' /metrics in the tests. Installed from Debian's prometheus package
## when missing and it can; otherwise those tests skip and say why.
promtool:
	@if command -v promtool >/dev/null 2>&1; then \
		echo "promtool: installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "promtool: installing Debian's prometheus package with apt-get"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install \
			-y -qq --no-install-recommends prometheus >/dev/null; } \
		|| echo "promtool: apt-get could not install it; its tests will skip"; \
	else \
		echo "promtool: not installed and cannot install it here (needs root" \
			"and apt-get); its tests will skip"; \
	fi

## make test: the whole suite against real PostgreSQL, broker and HTTP.
test: install browser promtool
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

## make bench: every benchmark under bench/, each beside its baseline, then
## one table of all their figures (bench/results/summary.md). A failed bench
## is listed as failed and the others still run. BENCH_ARGS go to every bench:
## `make bench BENCH_ARGS=--quick` for short runs, `--only e2e,queue` to pick.
bench: install
	$(BIN)/python -m bench.report $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache *.egg-info
