# Soak (issue 20): a mixed workflow (per-job, packed, bash, 2-rank MPI, apps
# failing on purpose; retries=2) under random compound faults with a fixed
# seed, then a verdict table; exit 1 if a check fails. Needs Flux, root and ss(8).
# Included by the Makefile.
#   make soak MINUTES=30 SEED=7        a long local soak (build/soak/soak.md)
#   make soak-short                     the CI mode: 2 minutes, every local fault kind (tests/test_soak.py)
MINUTES ?= 30
SEED ?= 20
SOAK_ARGS ?=

.PHONY: soak soak-short

soak: $(STAMP)  ## soak MINUTES (default 30) under random faults, seed SEED; verdict in build/soak/soak.md
	$(PY) tests/soak/soak.py --minutes $(MINUTES) --seed $(SEED) --out build/soak $(SOAK_ARGS)

soak-short: $(STAMP)  ## the soak's short CI mode (~2.5 min): tests/test_soak.py
	$(PY) -m pytest -q tests/test_soak.py $(PYTEST_ARGS)
