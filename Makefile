# One command for each thing you want to do. Everything lives in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml setup.py $(wildcard ext/ingest/*.pyx ext/ingest/*.pxd ext/ingest/*.pxi)

.PHONY: serve test bench build clean

serve: $(VENV)/.installed        ## install, then run the server with its defaults (./data, DuckDB)
	$(BIN)/ingest serve

test: $(VENV)/.installed-test    ## install with test extras, then run the whole test suite
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test   ## micro-benchmarks of the hot path (outside the test suite)
	$(BIN)/python -m pytest bench --benchmark-only

build: $(VENV)/bin/python        ## rebuild the Cython extension in place (INGEST_DEBUG=1 for a debug build)
	$(BIN)/python setup.py build_ext --inplace

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(SOURCES) | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(SOURCES) | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf build ingest/*.so ext/ingest/*.c ext/ingest/*.html
