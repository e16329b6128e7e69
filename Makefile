# Two entry points, both safe on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: demo test lint clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## The offline demo: Radicale, the Google and Microsoft emulators and crmcal on
## http://127.0.0.1:8000 with demo users and data (DEMO_ARGS="--data-dir demo-data").
demo: $(STAMP)
	$(BIN)/crmcal demo $(DEMO_ARGS)

## Lint, then the whole test suite (SQLite and PostgreSQL at 127.0.0.1:5432).
test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q -n auto

## The browser tests drive Debian's Chromium (Playwright cannot download one offline).
browser:
	@test -x $(CHROMIUM) || { apt-get update -qq && apt-get install -y -qq chromium; }

## ruff and mypy, as scripts/check runs them.
lint: $(STAMP)
	scripts/check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
