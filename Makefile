# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel (2.13.0) lies on this machine; a bare range would pull a multi-GB CUDA build.
# GPU users: `make install TORCH=torch` (or a pinned CUDA build).
TORCH ?= torch==2.13.0
EXTRAS ?= embedded,dev
PYTEST_ARGS ?=

.PHONY: install test lint typecheck unit integration demo bench-train bench-stream bench-gpu schemas clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

demo: install
	$(BIN)/cryptosent demo

schemas: install
	$(BIN)/python -m schemas.export

bench-train: install
	$(BIN)/python bench/train_quality.py

bench-stream: install
	$(BIN)/python bench/stream_throughput.py

# Chaos suite (kill -9, broker hang/restart, soak, malformed input): bench/results/chaos.*
# e.g. make chaos CHAOS_ARGS="--engine apache-kafka" or CHAOS_ARGS="--smoke".
CHAOS_ARGS ?=
.PHONY: chaos
chaos: install
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

bench-gpu:
	bash bench/gpu.sh --device cpu --quick

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
