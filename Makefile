# parsl-flux front door. `make help` lists the targets.
#
# Two commands do all set-up on a fresh machine:
#   make run    - install into .venv and run examples/workflow.py through a local Flux instance
#   make test   - install into .venv and run the test suite (Flux tests skip without Flux)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: help install run test test-flux lint clean

help:  ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

install: $(STAMP)  ## create .venv with parsl-flux and the test tools

run: $(STAMP)  ## run the example workflow through Flux (needs flux on PATH or FLUX_PATH)
	$(PY) examples/workflow.py

test: $(STAMP)  ## run all tests; pytest's "no tests collected" (exit 5) counts as success
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

lint: $(STAMP)  ## static checks: ruff (pyflakes errors) on the package, tests, site configs and examples
	$(PY) -m ruff check src tests site-configs examples

test-flux: $(STAMP)  ## only the tests that need a real Flux
	$(PY) -m pytest -m flux $(PYTEST_ARGS)

clean:  ## remove the venv and run directories
	rm -rf $(VENV) runinfo .pytest_cache

-include mk/*.mk
