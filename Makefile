# Everything a fresh machine needs comes from here and pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DB ?= sqlite:///./tenantflow.db
PG_VERSION := $(shell ls /etc/postgresql 2>/dev/null | head -n 1)

.PHONY: install install-serve bytecode guest serve test lint pytest postgres chromium bench bench-quick clean

# What serving needs (the embedded default and PostgreSQL), and everything for tests on top of it.
$(BIN)/.installed-serve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[postgres]"
	touch $@

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@ $(BIN)/.installed-serve

install-serve: $(BIN)/.installed-serve

install: $(BIN)/.installed

# Build (or verify) the guest component and its precompiled artifact; cached by content hash.
guest: install-serve
	$(BIN)/python -m tenantflow.wasm_build

# The project's modules compiled ahead, as pip does for an installed wheel: where PYTHONDONTWRITEBYTECODE is set
# (this machine kind sets it) Python never caches them, so every process would compile them all at its start
# (a worker's start: ~0.8 against ~0.57 s). compileall writes anyway, and only what changed since.
bytecode: install-serve
	$(BIN)/python -m compileall -q client guest host runtime wasm-build

serve: guest bytecode
	$(BIN)/tenantflow serve --db $(DB)

lint: install
	$(BIN)/ruff check client guest host runtime wasm-build tests bench
	$(BIN)/ruff format --check client guest host runtime wasm-build tests bench
	$(BIN)/mypy -p tenantflow
	PYTHONPATH=.typecheck $(BIN)/lint-imports

# PostgreSQL runs on this machine kind; start it if it is down.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $(PG_VERSION) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; echo "PostgreSQL did not start"; exit 1

# The dashboard's browser tests drive Debian's Chromium (never a downloaded browser).
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

pytest: install guest bytecode postgres chromium
	$(BIN)/pytest -q

test: lint pytest

bench: guest bytecode postgres
	$(BIN)/python -m bench

bench-quick: guest bytecode postgres
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build *.egg-info
