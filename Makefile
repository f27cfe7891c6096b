# Two commands on a fresh machine: `make demo` and `make test`. Each sets itself up.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,telemetry,dashboard]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sagaledger demo

lint: $(STAMP)
	$(VENV)/bin/ruff check sagaledger tests benchmarks examples
	$(VENV)/bin/mypy

test: $(STAMP)
	bash scripts/ensure-servers
	bash scripts/ensure-browser
	$(MAKE) lint
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/engine.py

clean:
	rm -rf $(VENV) sagaledger.db* sagaledger-demo-ledgers.json
