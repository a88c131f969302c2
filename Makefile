# One command to serve, one to test. Both create the virtualenv and install the project first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve demo test test-fast bench clean

LINKS := $(VENV)/.linked
# adapters/ installs as runengine.adapters, so the editable install is a tree of links
# (setuptools' strict mode) mapping the folders as a wheel does; a file added or removed
# changes its folder's time, and the links are laid again.
PACKAGE_DIRS := $(shell find runengine adapters -type d -not -name __pycache__ 2>/dev/null)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=strict
	touch $(STAMP) $(LINKS)

$(LINKS): $(STAMP) $(PACKAGE_DIRS)
	$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=strict
	touch $(LINKS)

install: $(LINKS)

serve: install
	$(VENV)/bin/runengine serve

demo: install
	$(PY) examples/demo.py

# The whole suite: unit, property, conformance, integration (HTTP, PostgreSQL, browser), slow ones too.
test: install
	$(PY) -m pytest -q

# The fast tier: unit, property and conformance tests (memory and SQLite stores), about a minute
# here. No server, process, PostgreSQL or browser: the markers declared in pyproject.toml, kept
# true by tests/tiers.py. Two processes (pytest-xdist), a test module each at a time.
test-fast: install
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow and not postgres and not browser and not server"

# Every benchmark, one after the other, each printing its tables; the tables go into
# docs/benchmarks.md. `make bench BENCH_ARGS=--quick` for the short sizes (checks the harnesses).
BENCH_ARGS ?=
bench: install
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
