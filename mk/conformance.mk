# Parsl's own test suite against parsl_flux.FluxExecutor (tests/conformance/),
# as Parsl's CI runs it once per config module. Included by the Makefile.
#
# The suite runs in its own venv, $(VENV)/conformance: Parsl's tests need
# pytest < 8 (see tests/conformance/requirements.txt), $(VENV)'s test tools a
# newer one. Its parsl is pinned to the one `make install` put in $(VENV).
# Known failures: tests/conformance/known_failures.txt (xfail, strict for kind
# "fails"). Options as in Parsl's per-config CI runs: -k below, --random-order
# (the seed is in the header; CONFORMANCE_ARGS=--random-order-seed=N repeats it),
# --durations 10. One run at a time per CONFORMANCE_DIR: Parsl's conftest
# re-points pytest-parsl/parsltest-current there at the start of each run.

CONFORMANCE_VENV ?= $(VENV)/conformance
CONFORMANCE_PY := $(abspath $(CONFORMANCE_VENV))/bin/python
CONFORMANCE_STAMP := $(CONFORMANCE_VENV)/.installed
# Where pytest runs: Parsl's conftest puts its per-run folders (pytest-parsl/,
# the last 3 kept) in the current directory, and tests write files there.
CONFORMANCE_DIR ?= build/conformance
# Parsl's per-config CI runs deselect these marks by keyword.
CONFORMANCE_K ?= not cleannet and not unix_filesystem_permissions_required and not issue_3620
CONFORMANCE_ARGS ?=

.PHONY: conformance

$(CONFORMANCE_STAMP): $(STAMP) tests/conformance/requirements.txt
	@echo "make: creating $(CONFORMANCE_VENV) for Parsl's test suite (parsl-flux, parsl[monitoring], pytest<8, pandas, pytest-random-order)"
	$(PYTHON) -m venv $(CONFORMANCE_VENV)
	$(CONFORMANCE_PY) -m pip install --quiet --upgrade pip
	$(CONFORMANCE_PY) -m pip install --quiet -e '.[flux]' -r tests/conformance/requirements.txt \
	  "parsl[monitoring]==$$($(PY) -c 'import importlib.metadata as m; print(m.version("parsl"))')"
	@touch $@

conformance: $(CONFORMANCE_STAMP)  ## Parsl's own test suite with FluxExecutor (tests/conformance/; CONFORMANCE_ARGS=... for pytest)
	@bash mk/ensure-flux.sh $(CONFORMANCE_PY) conformance
	@mkdir -p $(CONFORMANCE_DIR)
	@run=$$(mktemp -d "$${TMPDIR:-/tmp}/parsl-flux-conformance-XXXXXX"); \
	tests=$$($(CONFORMANCE_PY) -c 'import os, parsl.tests; print(os.path.dirname(parsl.tests.__file__))'); \
	echo "make conformance: pytest $$tests in $(CONFORMANCE_DIR), Parsl run_dir $$run/runinfo"; \
	cd $(CONFORMANCE_DIR) && \
	PYTHONPATH=$(CURDIR)/tests/conformance$${PYTHONPATH:+:$$PYTHONPATH} PARSL_FLUX_CONFORMANCE_RUN_DIR=$$run/runinfo \
	  $(CONFORMANCE_PY) -m pytest "$$tests" -c $(CURDIR)/tests/conformance/pytest.ini --rootdir "$$tests" \
	  -o cache_dir=$(abspath $(CONFORMANCE_DIR))/.pytest_cache -p parsl_flux_conformance \
	  --config $(CURDIR)/tests/conformance/parsl_flux_config.py -k "$(CONFORMANCE_K)" \
	  --random-order --durations 10 $(CONFORMANCE_ARGS); \
	rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make conformance: pytest selected no test: a conformance run must run tests"; rc=1; fi; \
	if [ $$rc -eq 0 ] || [ ! -d "$$run/runinfo" ]; then rm -rf "$$run"; fi; \
	if [ $$rc -ne 0 ]; then echo "make conformance: failed (pytest exit $$rc)$$([ -d "$$run" ] && echo "; logs: $$run/runinfo (parsl.log, flux_local/executor.log) and $(CONFORMANCE_DIR)/pytest-parsl/parsltest-current/block-*/manager.log")"; fi; \
	exit $$rc
