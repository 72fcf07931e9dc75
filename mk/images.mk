# Container images: containers/Dockerfile, and the Apptainer definition
# generated from it (see src/parsl_flux/images.py). Included by the Makefile.

IMAGE ?= parsl-flux:dev
SIF ?= parsl-flux.sif
HADOLINT ?= $(VENV)/bin/hadolint
SHELL_SCRIPTS := $(wildcard containers/*.sh) .ci/setup.d/10-images.sh

.PHONY: docker apptainer apptainer-def image-info lint-containers

docker:  ## build the Docker image $(IMAGE) (docker build; needs a Docker engine)
	docker build -f containers/Dockerfile -t $(IMAGE) .

apptainer-def: $(STAMP)  ## regenerate containers/parsl-flux.def from the Dockerfile
	$(PY) -m parsl_flux.images regenerate

apptainer: $(STAMP)  ## build $(SIF) with Apptainer from a definition in step with the Dockerfile
	$(PY) -m parsl_flux.images check
	apptainer build --force $(SIF) containers/parsl-flux.def

image-info: $(STAMP)  ## show the recipe (base image, user, labels, definition in step) and local versions
	$(PY) -m parsl_flux.images info

lint-containers: $(STAMP)  ## hadolint the Dockerfile, shellcheck the scripts, check the definition
	$(HADOLINT) --config containers/.hadolint.yaml containers/Dockerfile
	@if command -v shellcheck >/dev/null 2>&1; then \
	    echo "shellcheck $(sort $(SHELL_SCRIPTS))"; shellcheck $(sort $(SHELL_SCRIPTS)); \
	else echo "lint-containers: shellcheck not installed (.ci/setup.d/10-images.sh installs it); skipped"; fi
	$(PY) -m parsl_flux.images check
