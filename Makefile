# Hotline developer commands. Each target sets up what it needs (idempotently) first.
#   make demo   - run the paired-endpoint demo (two gateways, one encounter)
#   make demo-web - the same demo with the browser console; prints the page's URL
#   make test   - run the whole test suite (installs the `load` extra too, for the Dask test)
#   make lint   - ruff, ruff format --check, mypy --strict, buf lint, buf breaking
#   make breaking - buf breaking against the committed wire baseline proto/baseline/hotline-v1.binpb
#   make baseline - rewrite that baseline (only when a wire change is deliberate: see SPEC.md, Versioning)
#   make gen    - regenerate Python code, proto/SPEC.md (+ MUST index) and proto/examples/vectors
#   make ci     - what CI runs: lint + test
#   make load   - install the `load` extra (Dask distributed) and run `hotline sim load`:
#                 LOAD_ARGS="--rate 200 --duration 30 --local-workers 2" (or --workers tcp://HOST:8786)
#   make bench  - install the `bench` extra (NATS server and clients) and run `hotline sim bench`:
#                 the hot line against a gRPC echo and like-for-like brokers measured in the same
#                 run (NATS JetStream with fsync per ack; a RabbitMQ quorum queue if the Debian
#                 package rabbitmq-server is installed). BENCH_ARGS="--duration 30 --json f.json"

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=
LOAD_STAMP := $(VENV)/.installed-load
LOAD_ARGS ?= --rate 100 --duration 10 --local-workers 2
BUF_VERSION := 1.75.0
BUF    := $(VENV)/node/node_modules/.bin/buf

.PHONY: setup demo demo-web test lint gen ci buf breaking baseline bench load clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	touch $(BENCH_STAMP)

$(LOAD_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,load]'
	touch $(LOAD_STAMP)

$(BUF):
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node @bufbuild/buf@$(BUF_VERSION)

buf: $(BUF)

demo: setup
	$(VENV)/bin/hotline demo

demo-web: setup
	$(VENV)/bin/hotline demo --web

test: setup $(LOAD_STAMP)
	$(PY) -m pytest

lint: setup $(BUF)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	cd proto && ../$(BUF) lint
	cd proto && ../$(BUF) breaking --against baseline/hotline-v1.binpb

breaking: $(BUF)
	cd proto && ../$(BUF) breaking --against baseline/hotline-v1.binpb

baseline: $(BUF)
	cd proto && ../$(BUF) build --exclude-source-info -o baseline/hotline-v1.binpb

gen: setup
	$(PY) proto/generate.py
	$(PY) proto/specdoc.py
	$(PY) proto/make_vectors.py

ci: lint test

bench: $(BENCH_STAMP)
	$(VENV)/bin/hotline sim bench $(BENCH_ARGS)

load: $(LOAD_STAMP)
	$(VENV)/bin/hotline sim load $(LOAD_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
