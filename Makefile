# parsl-flux front door. `make help` lists the targets.
#
# Two commands do all set-up on a fresh machine:
#   make run    - install into .venv, build Flux if none is found, and run
#                 examples/workflow.py through a local Flux instance
#   make test   - install into .venv and run the test suite (Flux tests skip without Flux;
#                 `make flux` builds it, CI does)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: help install flux run test test-flux lint clean

help:  ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

$(RUN_STAMP): pyproject.toml
	@echo "make: creating $(VENV) and installing parsl-flux with what running needs (parsl, pyzmq, Flux binding deps)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[flux]'
	@touch $@

$(STAMP): $(RUN_STAMP)
	@echo "make: installing the test tools into $(VENV) (the 'test' extra)"
	$(PY) -m pip install --quiet -e '.[flux,test]'
	@touch $@

install: $(STAMP)  ## create .venv with parsl-flux and the test tools

flux:  ## build flux-core 0.88.0 (+ OpenMPI from Debian) into a per-user cache, reused when present (mk/build-flux.sh)
	bash mk/build-flux.sh --with-mpi

run: $(RUN_STAMP)  ## run the example workflow through Flux (builds Flux with `make flux` when none is found)
	@bash mk/ensure-flux.sh $(PY) run
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
