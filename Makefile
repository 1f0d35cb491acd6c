# tuneline: two commands for a newcomer — `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: demo test lint typecheck schemas bench clean up

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned to the local CPU wheel, so no dependency drags in a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tuneline demo

up: $(STAMP)
	$(BIN)/tuneline up

test: $(STAMP) lint typecheck
	$(BIN)/tuneline schemas export --check
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check schemas services tests bench
	$(BIN)/ruff format --check schemas services tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/tuneline schemas export

bench: $(STAMP)
	$(BIN)/python bench/bus.py

clean:
	rm -rf $(VENV) .tuneline .pytest_cache .mypy_cache .ruff_cache
