# ml-pipeline: the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.SHELLFLAGS := -eu -o pipefail -c

export UV_PYTHON ?= 3.11
export UV_PYTHON_DOWNLOADS ?= never
# environments installed with their bytecode, as the images are: where PYTHONDONTWRITEBYTECODE is
# set, every stage process otherwise compiled its imports again (~0.5-1 s a start here)
export UV_COMPILE_BYTECODE ?= 1
# uv from PATH, else bootstrapped into .tools/ (a venv: works as root or not, on any pip policy)
UV ?= $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
# the local runner and the tests start stages with uv: tell them where it is
export UV

# Each stage is its own uv project (own lock file, own venv): its tests run in its own environment.
STAGES := common ingest dbt trainer predictor dags k8s images
PROJECTS := . $(STAGES)
PYTEST_ARGS ?=
# the reliability tests append what they injected, tried and lost here; `make test` prints the totals
export RELIABILITY_COUNTS ?= $(CURDIR)/.data/reliability/counts.jsonl
# each suite's output is kept here too: CI shows only a log's tail, so `make test` ends by naming what failed
TEST_LOGS ?= $(CURDIR)/.data/test-logs
# `make lint` keeps its own mypy cache: a cache also written by a run over a subset of these paths
# (say `mypy predictor/src`) made a later full run report modules of mlp_common as missing.
MYPY_PATHS := $(wildcard common/src ingest/src trainer/src predictor/src dbt/src dags/*.py dags/ml_pipeline_lib bench/run.py bench/_common.py bench/dbt_dags.py bench/dag_parse.py)

# The demo's data: two years of history for 5,000 customers, 0.5% of rows with planted defects.
DATA_DIR ?= $(CURDIR)/.data
LANDING := $(DATA_DIR)/landing
DEMO_CUSTOMERS ?= 5000
DEMO_START ?= 2024-01-01
DEMO_END ?= 2025-12-31
DEMO_SEED ?= 7
DEMO_BAD_ROW_RATE ?= 0.005
# Three consecutive logical dates: the first trains and promotes (no champion yet), the second
# scores with it, the third retrains (cadence 2 days) and goes through the champion/challenger gate.
DEMO_DATES ?= 2025-12-29 2025-12-30 2025-12-31
DEMO_CONF ?= {"retrain_cadence_days": 2, "shard_count": 2}

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet --disable-pip-version-check uv

.PHONY: setup
setup: $(UV) ## create every stage's environment from its lock file
	@for p in $(PROJECTS); do if [ -f $$p/pyproject.toml ]; then $(UV) sync --quiet --locked --project $$p; fi; done

.PHONY: warehouse
warehouse: setup ## start the warehouse (embedded PostgreSQL unless PG* variables are set)
	@$(UV) run --quiet --project . warehouse up

.PHONY: warehouse-down
warehouse-down: ## stop the embedded warehouse (its data stays in .warehouse/)
	@$(UV) run --quiet --project . warehouse down

.PHONY: demo
demo: warehouse ## run the pipeline on generated data with the embedded warehouse
	@eval "$$($(UV) run --quiet --project . warehouse env)"; \
	if [ ! -f $(LANDING)/.generated ]; then \
	  echo "== generating $(DEMO_CUSTOMERS) customers, $(DEMO_START) .. $(DEMO_END) into $(LANDING)"; \
	  $(UV) run --quiet --project ingest ingest generate --out $(LANDING) --customers $(DEMO_CUSTOMERS) \
	    --start $(DEMO_START) --end $(DEMO_END) --seed $(DEMO_SEED) --bad-row-rate $(DEMO_BAD_ROW_RATE) >/dev/null; \
	  touch $(LANDING)/.generated; fi; \
	echo "== loading the history into raw.*"; \
	PIPELINE_RESULT_PATH=$(DATA_DIR)/ingest-history.json $(UV) run --quiet --project ingest ingest load --history --source $(LANDING) >/dev/null; \
	$(UV) run --quiet --project ingest ingest summary | grep -v '^{'; \
	echo "== running the ml_pipeline DAG (local runner) for $(DEMO_DATES)"; \
	PYTHONPATH=$(CURDIR)/dags PIPELINE_LANDING_DIR=$(LANDING) PIPELINE_REPORTS_DIR=$(CURDIR)/reports \
	  $(UV) run --quiet --project dags python -m ml_pipeline_lib.demo --conf '$(DEMO_CONF)' \
	  --task-log $(DATA_DIR)/demo-tasks.log $(DEMO_DATES)

.PHONY: test
test: warehouse lint lint-sql ## run every test this machine allows, each stage's in its own environment
	@rm -f $(RELIABILITY_COUNTS); rm -rf $(TEST_LOGS); mkdir -p $(TEST_LOGS); failed=""; \
	for s in $(STAGES); do if [ -d tests/$$s ]; then echo "== tests/$$s (environment: $$s)"; \
	    $(UV) run --quiet --project $$s pytest tests/$$s $(PYTEST_ARGS) 2>&1 | tee $(TEST_LOGS)/$$s.log \
	      || failed="$$failed tests/$$s"; fi; \
	done; echo "== reliability totals (every stage)"; \
	$(UV) run --quiet --project . python tests/reliability_report.py $(RELIABILITY_COUNTS) || failed="$$failed reliability"; \
	if [ -n "$$failed" ]; then echo "== FAILED:$$failed (logs in $(TEST_LOGS))"; \
	  grep -hE '^(FAILED|ERROR) ' $(TEST_LOGS)/*.log || true; exit 1; fi; echo "== every suite passed"

.PHONY: lint
lint: setup ## ruff (lint and format) and mypy over all Python code
	$(UV) run --quiet --project . ruff check .
	$(UV) run --quiet --project . ruff format --check .
	$(UV) run --quiet --project . mypy --cache-dir .mypy_cache/lint $(MYPY_PATHS)

.PHONY: lint-sql
lint-sql: warehouse ## sqlfluff (dbt templater) over the dbt models (compiling needs the warehouse)
	@eval "$$($(UV) run --quiet --project . warehouse env)"; cd dbt && $(UV) run --quiet --project . sqlfluff lint models

.PHONY: format
format: setup ## apply ruff's fixes and formatting
	$(UV) run --quiet --project . ruff check --fix .
	$(UV) run --quiet --project . ruff format .

# `make bench` scales (customers x two years); 500k is available (BENCH_SCALES=500k) but not the default.
BENCH_SCALES ?= 5k,50k
BENCH_ARGS ?=

.PHONY: bench
bench: warehouse ## (its own environment, synced on first use) the performance harness: every stage at 5 k and 50 k customers, the comparisons, a table and .data/bench/bench.json
	$(UV) run --quiet --frozen --project bench python bench/run.py --scale $(BENCH_SCALES) $(BENCH_ARGS)

.PHONY: bench-ingest
bench-ingest: warehouse ## ingest of a 1 M-row file vs plain COPY (prints times, ratio, peak RSS)
	$(UV) run --quiet --project ingest python bench/ingest.py

.PHONY: bench-dbt
bench-dbt: warehouse ## full dbt build vs the one-day incremental build at 5 k and 50 k customers
	$(UV) run --quiet --project dbt python bench/dbt.py

.PHONY: bench-train
bench-train: warehouse ## trainer on 100 k and 1 M-row training sets (fit time, total time, peak RSS)
	$(UV) run --quiet --project trainer python bench/train.py

.PHONY: bench-predict
bench-predict: warehouse ## predictor on 1 M customers, 1 and 4 shards, vs the plain COPY floor
	$(UV) run --quiet --project predictor python bench/predict.py

.PHONY: bench-generate
bench-generate: setup ## the data generator at 10 M transactions (prints rows/s and peak RSS)
	$(UV) run --quiet --project ingest python bench/generate.py

include k8s/kind.mk
include images/images.mk

.PHONY: clean
clean: ## remove generated data and reports (keeps the warehouse)
	rm -rf $(DATA_DIR) reports
