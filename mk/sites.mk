# Site configs (src/parsl_flux/site_configs/, linked as site-configs/; parsl-flux sites/doctor).
# Included by the Makefile.
SITE ?= local
NODES ?=

.PHONY: sites site-show doctor test-sites test-slurm slurm-up

sites: $(STAMP)  ## list the site configs
	$(VENV)/bin/parsl-flux sites

# IMAGE is also images.mk's tag (IMAGE ?= parsl-flux:dev): passed on only when the user set it
SITE_IMAGE = $(if $(filter command line environment,$(origin IMAGE)),$(IMAGE))
SITE_OPTIONS = $(if $(NODES),--nodes $(NODES)) $(if $(ACCOUNT),--account $(ACCOUNT)) \
	$(if $(SITE_IMAGE),--image $(SITE_IMAGE))

site-show: $(STAMP)  ## print the batch script of SITE (make site-show SITE=theta ACCOUNT=proj IMAGE=x.sif NODES=4)
	$(VENV)/bin/parsl-flux sites show $(SITE) $(SITE_OPTIONS)

doctor: $(STAMP)  ## what SITE needs and what is missing here (make doctor SITE=frontier ACCOUNT=proj IMAGE=x.sif)
	$(VENV)/bin/parsl-flux doctor --site $(SITE) $(SITE_OPTIONS)

test-sites: $(STAMP)  ## site configs, Cobalt provider and CLI tests
	$(PY) -m pytest tests/test_sites.py tests/test_cobalt.py tests/test_cli.py $(PYTEST_ARGS)

slurm-up:  ## start the one-node Slurm the Slurm tests use (root; as in CI)
	bash .ci/setup.d/20-slurm.sh

test-slurm: $(STAMP) slurm-up  ## the real-Slurm tests (Flux ones skip without Flux)
	$(PY) -m pytest -m slurm $(PYTEST_ARGS)
