# Two entry points: `make demo` runs the daemon against the built-in
# simulator, `make test` runs every check CI runs. Both build .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest tools bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check \
		--constraint constraints.txt --editable '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/ec2-import-monitor demo

tools:
	scripts/install-test-tools

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) tools
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP) tools
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .venv-awscli .venv-moto .mypy_cache .pytest_cache .ruff_cache
