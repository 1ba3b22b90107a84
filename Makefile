# The two commands of the README:
#   make demo   start the local stack, run examples/train.py, print what ClickHouse knows about it
#               and the run's page in the web UI
#   make test   lint, type-check, and run the whole test suite against real Kafka and ClickHouse
# Both create .venv and install everything on first use; nothing needs to be installed by hand
# beyond Python 3.10+, a JDK 17+ and Maven (for the Kafka jars).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install browser lint test demo bench down clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/test-overrides.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	@# uv, not pip: the integrations' libraries (torch with its CUDA wheels, about 5 GB) come
	@# from uv's cache (~/.cache/uv) in seconds on the second install, e.g. in a fresh clone.
	$(VENV)/bin/uv pip install --quiet --python $(PY) --override requirements/test-overrides.txt \
		-e '.[dev,integrations-test]'
	@touch $@

# The browser tests drive Debian's chromium package through Playwright (browsers cannot be
# downloaded here, and Playwright's own builds need that): installed once, as root or with sudo.
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
		$$sudo apt-get update -qq && $$sudo apt-get install -y -qq chromium; }

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m runstream.schemas.export --check

# The tests start their own stack (free ports, a temporary home) and stop it at the end; the
# trap stops it too when pytest itself is killed or crashes. Two pytest processes run side by
# side, each with its own stack: the tests marked second_lane (those that start, kill and
# restart a stack of their own, and a few long ones: tests/conftest.py), which mostly wait, and
# all the others. The second's output is printed after the first's; the target fails if either
# does.
test: lint browser
	@home=$$(mktemp -d -t runstream-test.XXXXXX); \
	trap '$(PY) -m runstream dev down --home "'"$$home"'/a" >/dev/null 2>&1; $(PY) -m runstream dev down --home "'"$$home"'/b" >/dev/null 2>&1; rm -rf "'"$$home"'"' EXIT; \
	mkdir -p "$$home/a" "$$home/b"; \
	RUNSTREAM_TEST_HOME="$$home/b" $(PY) -m pytest -m second_lane -p no:cacheprovider $(PYTEST_ARGS) >"$$home/second_lane.log" 2>&1 & own=$$!; \
	RUNSTREAM_TEST_HOME="$$home/a" $(PY) -m pytest -m "not second_lane" $(PYTEST_ARGS); rest=$$?; \
	wait $$own; own_status=$$?; \
	echo; echo "=== the second lane (-m second_lane) ==="; cat "$$home/second_lane.log"; \
	test $$rest -eq 0 -a $$own_status -eq 0

demo: install
	$(PY) -m runstream dev up
	$(PY) examples/train.py
	@$(PY) -c 'import runstream; from runstream.ui.cli import ui_address; \
	s = runstream.Settings.load(); \
	run = runstream.Api().runs("examples", order_by="-started_at", limit=1)[0]; \
	print(f"\nThe run in the web UI: {ui_address(s.ui_host, s.ui_port)}#/run/{run.id}?project=examples")'

# Benchmarks print tables and ratios (docs/benchmarks.md); the peers are installed for them only.
bench: install
	$(PY) -m pip install --quiet "wandb==0.31.0" "mlflow-skinny>=3,<4" sqlalchemy alembic
	$(PY) -m bench.sdk_log_cost
	$(PY) -m bench.sdk_delivery
	$(PY) -m bench.sdk_outage
	$(PY) -m bench.sink_ingest
	$(PY) -m bench.freshness
	$(PY) -m bench.query_latency
	$(PY) -m bench.processors
	$(PY) -m bench.integrations
	$(PY) -m bench.read_api
	$(PY) -m bench.ui

down:
	$(PY) -m runstream dev down

clean: down
	rm -rf $(VENV) build *.egg-info
