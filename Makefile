# Two commands on a fresh machine:
#   make train   # set up .venv, then run the default experiment (ARGS="..." adds overrides)
#   make test    # set up .venv, then run the test suite
#
# TORCH picks the PyTorch build installed *before* the package, so that pip never pulls another
# one: here `torch==2.13.0` is a local CPU build. On a CUDA machine keep the default (PyPI's
# Linux wheels carry CUDA); on another CPU-only machine pass PyTorch's CPU wheel index, e.g.
#   make test TORCH="torch --index-url <PyTorch CPU wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
ARGS ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin

.PHONY: setup train test test-slow lint clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,sweeps,ray]"
	touch $@

setup: $(BIN)/.installed

train: setup
	$(BIN)/attnlstm-train $(ARGS)

# two pytest workers (pytest-xdist): most tests start interpreters or train tiny runs
test: setup
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -n 2 -m slow $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean-venv:
	rm -rf $(VENV)
