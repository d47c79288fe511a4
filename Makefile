PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= reports/demo
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

# One OpenMP/MKL thread per process and no OpenMP spin-waiting. The test suite and the demo run many
# small tensor operations; with a thread per core, every operation waits at a barrier for a thread
# that another job may have descheduled, and spinning there multiplies CPU time under load
# (see src/critwin/_threads.py). Set in the environment so that CLI subprocesses of the tests follow.
# The cores are used by pytest workers instead (one per core; a test module stays on one worker).
TEST_WORKERS ?= 2
QUIET_THREADS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE

.PHONY: setup test test-slow bench lint demo docs clean

setup: $(STAMP)

# The tested torch, installed first; pip's configured index decides its build (CPU or CUDA: see README).
TORCH_PIN := torch==2.13.0

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP) $(DEMO_STAMP)

# `make demo` installs only what the demo imports (the base install and the `demo` extra), not the
# test and lint toolchain of `make setup`; after `make setup` it installs nothing.
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e '.[demo]'
	touch $(DEMO_STAMP)

test: setup
	$(QUIET_THREADS) $(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

test-slow: setup
	$(QUIET_THREADS) $(BIN)/python -m pytest -q -p no:cacheprovider -m slow

bench: setup
	$(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

demo: $(DEMO_STAMP)
	$(QUIET_THREADS) $(BIN)/critwin demo --out $(DEMO_OUT)

# The docs site: site/index.html. Fails on any warning (mkdocs --strict); no network at build time.
docs: setup
	$(BIN)/python -m pip install -q -e '.[docs]'
	$(BIN)/python scripts/gen_cli_docs.py docs/cli.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --clean --site-dir site

clean:
	rm -rf $(VENV) reports .pytest_cache
