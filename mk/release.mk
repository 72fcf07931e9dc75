# Releases, application images and the documentation site. Included by the Makefile.
#   make release-test   rehearse a release and a user's pull on 127.0.0.1 (containers/release-test.sh)
#   make app-image      an application image FROM $(IMAGE): Debian's LAMMPS (examples/lammps/Containerfile)
#   make app-sif        its SIF; make app-test runs tests/test_app_image.py (cluster + podman)
#   make docs           the MkDocs site, strict (warnings are errors), into build/site

APP_IMAGE ?= parsl-flux-lammps:dev
APP_SIF ?= parsl-flux-lammps.sif
RELEASE_STAMP := $(VENV)/.installed-release
DOCS_STAMP := $(VENV)/.installed-docs
export APP_IMAGE APP_SIF

.PHONY: release-test app-image app-sif app-test docs

$(RELEASE_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[flux,test,release]'
	@touch $@

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[flux,test,docs]'
	@touch $@

release-test: $(RELEASE_STAMP) apptainer-tool  ## rehearse a release on 127.0.0.1: build, push (podman, ORAS), pull as a user, run the example from each copy
	PYTHON=$(PY) bash containers/release-test.sh

app-image:  ## application image $(APP_IMAGE) FROM $(IMAGE) with Debian's LAMMPS (examples/lammps/Containerfile)
	bash -c '. containers/engine.sh && pick_engine && ignore=() && \
	    if [ "$$ENGINE" = podman ]; then ignore=(--ignorefile containers/Dockerfile.dockerignore); fi && \
	    engine_build "$${ignore[@]}" --build-arg BASE=$(IMAGE) -f examples/lammps/Containerfile -t $(APP_IMAGE) .'

app-sif: apptainer-tool  ## $(APP_SIF) from $(APP_IMAGE) (same route as `make sif`)
	IMAGE=$(APP_IMAGE) SIF=$(APP_SIF) bash containers/image.sh sif

app-test: $(STAMP)  ## tests/test_app_image.py: LAMMPS 2 ranks on 2 cluster nodes (Apptainer) and 1 node (podman) vs mpirun
	SLURM_CONF=$${PARSL_FLUX_CLUSTER_DIR:-/var/lib/parsl-flux-cluster}/slurm.conf PARSL_FLUX_APP_SIF=$(abspath $(APP_SIF)) \
	    PARSL_FLUX_APP_IMAGE=$(APP_IMAGE) $(PY) -m pytest tests/test_app_image.py $(PYTEST_ARGS)

docs: $(DOCS_STAMP)  ## build the documentation site (MkDocs, strict) into build/site
	$(PY) -m mkdocs build --strict --site-dir build/site
