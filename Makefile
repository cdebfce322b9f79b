# threadkit developer commands. Everything installs into a local virtual environment on
# first use (.venv, rebuilt when pyproject.toml changes), so a fresh clone needs only
# Python 3.11 and make.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
EXTRAS ?= dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRAS)
PYTEST_ARGS ?=

.PHONY: help demo test pytest typecheck lint docs bench stress shake dist clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $@

demo: $(STAMP)  ## run the demo: download pages one by one, then with fan_out_and_join
	$(BIN)/python -m threadkit demo

test: pytest typecheck lint docs  ## the whole suite: tests, type checks, lint, docs build

pytest: $(STAMP)  ## the test suite, then its concurrency tests again under race shaking
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -m shake --shake -p no:cacheprovider $(PYTEST_ARGS)

typecheck: $(STAMP)  ## mypy --strict and pyright --strict over src/ and tests/typing/
	$(BIN)/python -m mypy
	$(BIN)/pyright

lint: $(STAMP)  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: $(STAMP)  ## build the docs (warnings are errors) and run their examples
	$(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html
	$(BIN)/sphinx-build -q -W --keep-going -b doctest docs docs/_build/doctest

bench: $(STAMP)  ## run the benchmarks and print ratio tables
	$(BIN)/python -m benchmarks

stress: $(STAMP)  ## long soak of the stateful and fault-injection suites
	THREADKIT_STRESS=1 $(BIN)/python -m pytest -m slow -p no:cacheprovider --timeout=1800 $(PYTEST_ARGS)

dist: $(STAMP)  ## build the wheel and sdist and check their metadata
	rm -rf dist
	$(BIN)/python -m build --outdir dist . >/dev/null
	$(BIN)/twine check --strict dist/*

clean:  ## remove virtual environments and build products
	rm -rf .venv .venv-* dist docs/_build .pytest_cache .mypy_cache .ruff_cache .hypothesis
