# One command for each thing you want to do. Everything lives in .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml setup.py $(wildcard ext/ingest/hotpath/*.pyx ext/ingest/hotpath/*.pxd ext/ingest/hotpath/*.pxi ext/ingest/hotpath/encoder/*)

.PHONY: serve check test bench build clean fuzz fuzz-asan

serve: $(VENV)/.installed        ## install, then run the server with its defaults (./data, DuckDB)
	$(BIN)/ingest serve

# the fast loop: tests/unit, tests/hotpath and the e2e smoke set (tests/conftest.py SMOKE), no soak
CHECK_TIERS := not soak and (not e2e or smoke)
check: $(VENV)/.installed-test   ## install with the test and bench extras, then run the fast tier (under 90 s)
	$(BIN)/python -m pytest -m "$(CHECK_TIERS)"

test: $(VENV)/.installed-test    ## install with the test and bench extras, then run the whole test suite, soak included (CI)
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test   ## micro-benchmarks of the hot path (outside the test suite)
	$(BIN)/python -m pytest bench --benchmark-only

build: $(VENV)/bin/python        ## rebuild the Cython extension in place (INGEST_DEBUG=1 for a debug build)
	$(BIN)/python setup.py build_ext --inplace

FUZZ_SECONDS ?= 600
ASAN_DIR := build/asan
fuzz: $(VENV)/.installed-test    ## fuzz the encoder for FUZZ_SECONDS; corpus kept in fuzz-corpus/
	mkdir -p fuzz-corpus
	$(BIN)/python tests/hotpath/fuzz_encoder.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 fuzz-corpus

fuzz-asan: $(VENV)/.installed-test    ## the same under AddressSanitizer (apt-get install clang libclang-rt-14-dev)
	rm -rf $(ASAN_DIR) && mkdir -p $(ASAN_DIR)/corpus $(ASAN_DIR)/artifacts
	cp -r ext ingest tests setup.py pyproject.toml README.md $(ASAN_DIR)/ && rm -f $(ASAN_DIR)/ingest/hotpath/*.so
	cd $(ASAN_DIR) && CC=clang LDSHARED="clang -shared" \
	  CFLAGS="-fsanitize=address,fuzzer-no-link -fno-omit-frame-pointer -g" \
	  LDFLAGS="-fsanitize=address,fuzzer-no-link" \
	  INGEST_BUILD_ONLY=_encoder $(CURDIR)/$(BIN)/python setup.py build_ext --inplace
	LD_PRELOAD="$$($(BIN)/python -c 'import atheris; print(atheris.path())')/asan_with_fuzzer.so" \
	  ASAN_OPTIONS=detect_leaks=0 INGEST_FUZZ_REFERENCE=0 \
	  $(BIN)/python $(ASAN_DIR)/tests/hotpath/fuzz_encoder.py -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	  -rss_limit_mb=4096 -artifact_prefix=$(ASAN_DIR)/artifacts/ $(ASAN_DIR)/corpus

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(SOURCES) | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(SOURCES) | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf build ingest/hotpath/*.so ext/ingest/hotpath/*.c ext/ingest/hotpath/*.html
