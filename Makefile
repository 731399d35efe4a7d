# One-command set-up: every target installs what it needs on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
MANIFEST := dbt_project/target/manifest.json
export DAGSTER_HOME ?= $(CURDIR)/var/dagster_home
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo ui test lint install dbt-prepare sandbox bench clean browser prod-up prod-down prod-status

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP)

$(MANIFEST): $(STAMP) $(shell find dbt_project -name '*.sql' -o -name '*.yml' | grep -v target)
	cd dbt_project && ../$(BIN)/dbt parse --profiles-dir . --quiet
	touch $@

dbt-prepare: $(MANIFEST)

demo: install dbt-prepare
	$(BIN)/illuma demo

ui: install dbt-prepare
	$(BIN)/illuma instance-home >/dev/null
	$(BIN)/illuma runs recover
	$(BIN)/illuma sandbox serve & sandbox=$$!; trap "kill $$sandbox" EXIT INT TERM; \
	  $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The production topology on this machine (README, "Production"): code server, webserver and
# daemon on PostgreSQL, the sandbox standing in for the marketplaces; its own DAGSTER_HOME and logs
# under var/prod/ (ILLUMA_PROD_* move ports and folders). prod-down stops only what prod-up started.
prod-up: install dbt-prepare
	$(BIN)/illuma prod up

prod-down:
	$(BIN)/illuma prod down

prod-status:
	$(BIN)/illuma prod status

# The UI test's browser: Debian's chromium package, never a browser build downloaded by a test tool.
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the UI test"; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null); }

# Two workers by default (the CI machine's two cores; many tests wait on servers, runs and daemons),
# each test file kept on one worker (its module fixtures built once). TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 2
test: install dbt-prepare browser
	$(BIN)/illuma instance-home >/dev/null
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf var dbt_project/target dbt_project/logs
