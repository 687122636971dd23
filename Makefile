# The two commands of the README:
#   make demo   create .venv, install closedloop, run the demo on the embedded stack
#   make test   create/update .venv, install what the tests need, run the whole suite
# and for contributors:
#   make lint   no merge-conflict markers, ruff (lint and format check) and mypy, as CI runs them first
#   make unit   the tests that need no service (no Kafka, no ClickHouse, no browser), in under a minute
# Installing is skipped when .venv already holds this pyproject.toml (a stamp keyed on its hash).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.closedloop-installed
PYTEST_ARGS ?=
# The suite on every core (pytest-xdist): most tests wait on Kafka and ClickHouse rather than compute, and each
# worker starts its own embedded Kafka and ClickHouse endpoint (tests/conftest.py). The slowest tests are listed at
# the end, to see what the 20-minute CI budget goes to.
PYTEST_PARALLEL ?= -n auto --dist worksteal

UNIT_MARKERS := not kafka and not clickhouse and not e2e and not browser

.PHONY: demo test lint unit venv system-deps java-deps kafka up down status clean-venv

demo: venv java-deps kafka
	$(VENV)/bin/closedloop demo

test: venv system-deps java-deps kafka
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) --durations=25 $(PYTEST_ARGS)

lint: venv
	@if git grep -nE '^(<<<<<<<|>>>>>>>) ' -- . >/dev/null 2>&1; then \
	  echo "merge-conflict markers left in:" >&2; git grep -nE '^(<<<<<<<|>>>>>>>) ' -- . >&2; exit 1; fi
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest -q $(PYTEST_PARALLEL) -m "$(UNIT_MARKERS)" $(PYTEST_ARGS)

up down status: venv
	$(VENV)/bin/closedloop $@

venv:
	@set -euo pipefail; \
	if ! $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	  echo "closedloop needs Python 3.11 or newer as '$(PYTHON)' (found: $$($(PYTHON) --version 2>&1)). Run: make PYTHON=python3.11 ..." >&2; \
	  exit 1; \
	fi; \
	if [ ! -x $(VENV)/bin/python ]; then \
	  echo "Creating $(VENV)"; \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      rm -rf $(VENV); \
	      DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	      $(PYTHON) -m venv $(VENV); \
	    else \
	      echo "'$(PYTHON) -m venv' failed: install your distribution's venv package (Debian: apt-get install python3-venv)." >&2; \
	      exit 1; \
	    fi; \
	  fi; \
	fi; \
	key=$$(sha256sum pyproject.toml | cut -d' ' -f1); \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$key" ]; then \
	  echo "Installing closedloop and its dependencies into $(VENV)"; \
	  $(VENV)/bin/pip install --disable-pip-version-check -q -e '.[dev]'; \
	  echo "$$key" > $(STAMP); \
	fi

# Debian packages the browser and terminal tests drive; installed only when missing and when we may (root).
system-deps:
	@set -euo pipefail; \
	missing=""; \
	for tool in chromium tmux; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "Missing:$$missing. Install them (Debian: sudo apt-get install$$missing), or the tests that need them fail." >&2; \
	  fi; \
	fi

# The embedded Kafka needs Java 17+ and, for its first start, Maven (it fetches Kafka's jars from Maven Central).
# Installed only when missing and when we may (root); not needed when CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS points
# at a Kafka of your own.
java-deps:
	@set -euo pipefail; \
	if [ -n "$${CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS:-}" ]; then exit 0; fi; \
	java_major=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\.\{0,1\}\([0-9]*\).*/\1 \2/p' | head -1 | \
	  awk '{ print ($$1 == 1 ? $$2 : $$1) }'); \
	missing=""; \
	if [ -z "$$java_major" ] || [ "$$java_major" -lt 17 ]; then missing="openjdk-17-jre-headless"; fi; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing:$$missing (the embedded Apache Kafka runs on Java 17+; Maven fetches its jars once)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "Missing:$$missing. The embedded Apache Kafka needs Java 17+ and Maven (Debian: sudo apt-get install$$missing), or set CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS to a Kafka of your own." >&2; \
	  fi; \
	fi

# Kafka's jars (Maven) and its class-data archive, once per machine (~/.cache/closedloop), before anything times it.
kafka: venv java-deps
	@if [ -z "$${CLOSEDLOOP_KAFKA_BOOTSTRAP_SERVERS:-}" ]; then $(VENV)/bin/python -m deploy.kafka_broker; fi

clean-venv:
	rm -rf $(VENV)
