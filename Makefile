# ragwatch: `make run` serves the embedded default, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= ./data
PORT ?= 8000
# program=Debian package: what the tests and the benchmark run for real, installed when missing (as root)
TEST_PROGRAMS := redis-server=redis-server prometheus=prometheus promtool=prometheus \
	prometheus-alertmanager=prometheus-alertmanager amtool=prometheus-alertmanager
BENCH_PROGRAMS := wrk=wrk redis-server=redis-server cc=gcc taskset=util-linux

UV_VERSION := 0.13.9
UV := .tools/uv/bin/uv
# uv installs exactly what uv.lock pins, with the Python the Makefile found, and never downloads a Python.
SYNC := UV_PYTHON=$(PYTHON) UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --extra dev

.PHONY: run test test-fast fuzz lint fmt lock system-deps clean stack bench soak eval eval-tune

$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	$(PYTHON) -m venv .tools/uv
	.tools/uv/bin/python -m pip install --quiet uv==$(UV_VERSION)

# The virtual environment, exactly as uv.lock pins it (the project itself installed editable).
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(SYNC)
	touch $(STAMP)

## run: serve the embedded default (LanceDB under ./data, offline embedder and answerer, a dev JWT secret)
run: $(STAMP)
	@mkdir -p $(DATA_DIR)
	@test -s $(DATA_DIR)/dev-jwt-secret || $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(48))' > $(DATA_DIR)/dev-jwt-secret
	@chmod 600 $(DATA_DIR)/dev-jwt-secret
	@export RAGWATCH_DATA_DIR=$(DATA_DIR) RAGWATCH_JWT_SECRET_FILE=$(DATA_DIR)/dev-jwt-secret RAGWATCH_LOG_FORMAT=$${RAGWATCH_LOG_FORMAT:-text}; \
	  token=$$($(BIN)/ragwatch token --tenant demo --user dev --role admin --role member --ttl 12h) || exit 1; \
	  echo "ragwatch (dev) on http://127.0.0.1:$(PORT)   JWT secret: $(DATA_DIR)/dev-jwt-secret"; \
	  echo "An admin token for tenant 'demo', valid 12h:"; \
	  echo "  export RAGWATCH_TOKEN=$$token"; \
	  echo "  curl -s -H \"Authorization: Bearer \$$RAGWATCH_TOKEN\" http://127.0.0.1:$(PORT)/v1/knowledge-bases"; \
	  exec $(BIN)/ragwatch serve --port $(PORT)

## test: install what the tests need (venv, Debian packages when root), lint, type-check, run every test
test: $(STAMP) system-deps lint
	$(BIN)/python -m pytest -q

## test-fast: the unit layer only (tests/unit: pure logic, no servers), in seconds
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

## fuzz: schemathesis against the running app, the large budget (FUZZ_EXAMPLES, FUZZ_SECONDS, FUZZ_WORKERS; FUZZ_SEED replays)
FUZZ_EXAMPLES ?= 500
FUZZ_SECONDS ?= 600
FUZZ_WORKERS ?= 2
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_WORKERS=$(FUZZ_WORKERS) \
	  $(BIN)/python -m pytest -q -s --timeout=0 tests/service/test_fuzz.py

## lint: ruff (lint and format) and mypy --strict on service/, telemetry/, bench/, the client (clients/python) and dashboards/
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## lock: resolve pyproject.toml's dependencies again into uv.lock (run after changing them; commit both)
lock: | $(UV)
	UV_PYTHON=$(PYTHON) UV_PYTHON_DOWNLOADS=never $(UV) lock

## stack: the API with Redis, the collector, Prometheus, Alertmanager, Tempo, Loki and Grafana, in Docker
stack:
	@mkdir -p secrets/alertmanager && chmod 700 secrets
	@test -s secrets/jwt-secret || $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))' > secrets/jwt-secret
	@test -s secrets/grafana-admin-password || $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(18))' > secrets/grafana-admin-password
	@chmod 644 secrets/jwt-secret secrets/grafana-admin-password  # read by the containers' own users
	docker compose up -d
	@echo "Grafana        http://127.0.0.1:3000   (anonymous read-only; admin password in secrets/grafana-admin-password)"
	@echo "Prometheus     http://127.0.0.1:9090"
	@echo "Alertmanager   http://127.0.0.1:9093"
	@echo "ragwatch API   http://127.0.0.1:8000   (token: docker compose exec api ragwatch token --tenant demo --user dev --role admin)"

## bench: the benchmark (2 cores, about 12 minutes): bench/results/latest.{json,md,png}; BENCH_ARGS=--quick for a smoke run
bench: $(STAMP)
	@bash tests/ensure-system-deps.sh $(BENCH_PROGRAMS)
	$(SYNC) --extra bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## soak: 10 min of chat, search and ingestion at 70 % of capacity, Redis restarted half-way: bench/results/soak.json; SOAK_ARGS="--minutes 1"
soak: $(STAMP)
	@bash tests/ensure-system-deps.sh $(BENCH_PROGRAMS)
	$(SYNC) --extra bench
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

## eval: retrieval quality on a BEIR dataset through the service (DATASET=folder, default SciFact beside the clone)
DATASET ?= ../shared/datasets/scifact
eval: $(STAMP)
	@test -f $(DATASET)/queries.jsonl || { echo "make eval: no BEIR dataset at $(DATASET). Get one from https://github.com/beir-cellar/beir (SciFact: https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip), unzip it and run: make eval DATASET=path/to/scifact"; exit 2; }
	$(SYNC) --extra bench
	$(BIN)/python -m bench.eval $(DATASET) $(EVAL_ARGS)

## eval-tune: choose RAGWATCH_LEXICAL_WEIGHT on the dataset's train queries (never the test ones)
eval-tune:
	$(MAKE) eval EVAL_ARGS="--tune $(EVAL_ARGS)"

## system-deps: Debian packages the tests run for real
system-deps:
	@bash tests/ensure-system-deps.sh $(TEST_PROGRAMS)

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
