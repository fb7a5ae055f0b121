# Two commands do all the set-up:  `make run`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check redis-server chromium bench faults clean

$(STAMP): pyproject.toml examples/analytics/pyproject.toml examples/tools_demo/pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Switchboard needs Python 3.11+ (set PYTHON=python3.11)"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The distribution was called switchboard before it took its own PyPI name
	# (that one belongs to another project): drop a copy installed under it.
	$(BIN)/python -m pip uninstall --quiet --yes switchboard 2>/dev/null || true
	$(BIN)/python -m pip install --quiet -e ".[test,otel]"
	# The worked example plug-in (docs/WRITING-ACTORS.md); the plug-in tests run it.
	$(BIN)/python -m pip install --quiet -e examples/analytics
	# The example user tool (docs/WRITING-ACTORS.md, Tools); the tool tests call it.
	$(BIN)/python -m pip install --quiet -e examples/tools_demo
	touch $(STAMP)

## run: the whole system in one process on the in-memory bus, on 127.0.0.1:8080
## (the demo agent can hang up and press keys unless SWITCHBOARD_TOOLS says otherwise)
run: $(STAMP)
	SWITCHBOARD_TOOLS="$${SWITCHBOARD_TOOLS-end_call,send_digits}" $(BIN)/switchboard dev

## redis-server: install it when missing (the Redis tests start their own servers);
## redis-tools brings redis-benchmark, the reference bench/bus.py compares against
redis-server:
	@{ command -v redis-server && command -v redis-benchmark; } >/dev/null 2>&1 || { \
	  echo "installing redis-server and redis-tools (Debian packages)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server redis-tools >/dev/null; }
	@redis-server --version

## chromium: the headless browser the dashboard tests drive (Debian package; playwright
## drives it through /usr/bin/chromium and never downloads a browser of its own)
chromium:
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian package) for the dashboard's browser tests"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@/usr/bin/chromium --version

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy examples/analytics/switchboard_analytics
	$(BIN)/mypy examples/tools_demo/switchboard_tools_demo

## test: lint, type-check and run the whole suite (unit, bus conformance, system),
## on every core (pytest-xdist; the multi-process tests share one worker)
test: $(STAMP) redis-server chromium lint
	$(BIN)/pytest -n auto --dist loadgroup

bench: $(STAMP) redis-server
	$(BIN)/python bench/turn_latency.py
	$(BIN)/python bench/bus.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/interrupt_cancel.py

## faults: 20 live calls on real processes while each fault happens in turn
## (kill -9 of each role, Redis stopped, restarted, full; a worker paused past
## its lease; a tokensPlayed flood; 2,000 idle sockets); table in docs/FAULTS.md
faults: $(STAMP) redis-server
	$(BIN)/python bench/faults.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
