# ml-pipeline: the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export UV_PYTHON ?= 3.11
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)

.PHONY: help
help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(UV):
	python3 -m pip install --user --quiet uv || python3 -m pip install --quiet --break-system-packages uv

# Each stage is its own uv project (own lock file, own venv): its tests run in its own environment.
STAGES := common ingest dbt trainer predictor dags
PYTEST_ARGS ?=

.PHONY: setup
setup: $(UV) ## create every stage's environment from its lock file
	@for s in . $(STAGES); do [ -f $$s/pyproject.toml ] && $(UV) sync --quiet --project $$s || exit 1; done

.PHONY: warehouse
warehouse: $(UV) ## start the warehouse (embedded PostgreSQL unless PG* variables are set)
	@$(UV) run --quiet --project . warehouse up

.PHONY: test
test: setup warehouse ## run every test this machine allows, each stage's in its own environment
	@status=0; for s in $(STAGES); do \
	  if [ -d tests/$$s ]; then echo "== tests/$$s (environment: $$s)"; \
	    $(UV) run --quiet --project $$s pytest tests/$$s $(PYTEST_ARGS) || status=1; fi; \
	done; exit $$status

.PHONY: lint
lint: $(UV) ## ruff and mypy over the Python code
	$(UV) run --quiet --project . ruff check .
	$(UV) run --quiet --project . ruff format --check .
