# threadkit developer commands. Everything installs into a local virtual environment on
# first use (.venv, rebuilt when pyproject.toml changes), so a fresh clone needs only
# Python 3.11 and make.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
EXTRAS ?= dev
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRAS)
PYTEST_ARGS ?=

.PHONY: help demo test pytest devmode typecheck lint docs bench stress dist clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $@

demo: $(STAMP)  ## run the demo: download pages one by one, then with fan_out_and_join
	$(BIN)/python -m threadkit demo

test: pytest typecheck lint docs dist  ## the whole suite: tests, type checks, lint, docs, packaging

pytest: $(STAMP)  ## the test suite, then its concurrency tests again under race shaking
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -m shake --shake -p no:cacheprovider $(PYTEST_ARGS)

devmode: $(STAMP)  ## the suite under python -X dev with every warning an error
	PYTHONWARNINGS=error $(BIN)/python -X dev -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

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

dist: dist/.checked  ## build the wheel and sdist, check their metadata, run the wheel

# Rebuilt only when a packaged file changes. The wheel is installed into a clean virtual
# environment and run from outside the checkout, as a user would get it.
dist/.checked: $(STAMP) $(shell git ls-files src pyproject.toml README.md LICENSE 2>/dev/null)
	rm -rf dist .venv-wheel
	$(BIN)/python -m build --no-isolation --outdir dist . >/dev/null
	$(BIN)/twine check --strict dist/*
	$(PYTHON) -m venv .venv-wheel
	.venv-wheel/bin/python -m pip install --quiet --disable-pip-version-check "$$(ls dist/*.whl)[progress]"
	cd /tmp && $(CURDIR)/.venv-wheel/bin/python -c "import threadkit; print('wheel imports threadkit', threadkit.__version__)"
	cd /tmp && $(CURDIR)/.venv-wheel/bin/python -m threadkit demo --pages 5 --latency 0.02 --workers 5
	touch $@

clean:  ## remove virtual environments and build products
	rm -rf .venv .venv-* dist docs/_build .pytest_cache .mypy_cache .ruff_cache .hypothesis
