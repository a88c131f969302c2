# One command to serve, one to test. Both create the virtualenv and install the project first.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install serve demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/runengine serve

demo: install
	$(PY) examples/demo.py

# The whole suite: unit, property, conformance, integration (HTTP, PostgreSQL, browser), slow ones too.
test: install
	$(PY) -m pytest -q

# Everything but the tests marked slow.
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
