# Container images: containers/Dockerfile, and the Apptainer definition
# generated from it (see src/parsl_flux/tools/images.py). Included by the Makefile.
# The engine is podman or docker, whichever answers (containers/engine.sh;
# CONTAINER_ENGINE=podman|docker picks one).

IMAGE ?= parsl-flux:dev
SIF ?= parsl-flux.sif
HADOLINT ?= $(VENV)/bin/hadolint
SHELL_SCRIPTS := $(wildcard containers/*.sh containers/*/*.sh .ci/*.sh .ci/cluster/*.sh .ci/setup.d/*.sh mk/*.sh)
export IMAGE SIF

.PHONY: podman-setup base-standin image image-test image-size docker sif sif-test apptainer-tool apptainer apptainer-def \
        image-info lint-containers ci-cold

podman-setup:  ## root: install podman + runc and make plain `podman run` work in this sandbox (containers/podman-setup.sh)
	bash containers/podman-setup.sh

base-standin:  ## build the local stand-in for the base image fluxrm/flux-sched:bookworm-v0.54.0 (no registry; ~12 min)
	bash containers/base-standin/build.sh

image:  ## build $(IMAGE) from containers/Dockerfile with podman or docker (~5 min)
	bash containers/image.sh build

docker: image  ## same as `make image`

image-test:  ## in $(IMAGE): test suite, MPI, example, and the run commands of docs/images.md (every step runs; fails at the end)
	bash containers/image.sh test

image-size:  ## size of $(IMAGE)
	bash containers/image.sh size

apptainer-tool:  ## install Apptainer from Debian sid under a private prefix, if none (containers/apptainer-sid.sh)
	@command -v apptainer >/dev/null 2>&1 || bash containers/apptainer-sid.sh

sif: apptainer-tool  ## $(SIF) from the built $(IMAGE) (oci-archive -> apptainer build; ~2 min)
	bash containers/image.sh sif

sif-test:  ## the Apptainer commands of docs/images.md with $(SIF)
	bash containers/image.sh sif-test

apptainer-def: $(STAMP)  ## regenerate containers/parsl-flux.def from the Dockerfile
	$(PY) -m parsl_flux.tools.images regenerate

apptainer: $(STAMP)  ## build $(SIF) with Apptainer from the definition (pulls the base image from Docker Hub)
	$(PY) -m parsl_flux.tools.images check
	apptainer build --force $(SIF) containers/parsl-flux.def

image-info: $(STAMP)  ## show the recipe (base image, user, labels, definition in step) and local versions
	$(PY) -m parsl_flux.tools.images info

lint-containers: $(STAMP)  ## hadolint the Dockerfile, shellcheck the scripts, check the definition
	$(HADOLINT) --config containers/.hadolint.yaml containers/Dockerfile
	@if command -v shellcheck >/dev/null 2>&1; then \
	    echo "shellcheck $(sort $(SHELL_SCRIPTS))"; shellcheck -x $(sort $(SHELL_SCRIPTS)); \
	elif [ -n "$${CI:-}$${PARSL_FLUX_NO_SKIPS:-}" ]; then \
	    echo "lint-containers: shellcheck not installed, and CI must not skip it (.ci/setup.d/10-images.sh installs it)"; exit 1; \
	else echo "lint-containers: shellcheck not installed (.ci/setup.d/10-images.sh installs it); skipped"; fi
	$(PY) -m parsl_flux.tools.images check

ci-cold:  ## .ci/run from nothing: empty project cache and container storage, every artifact rebuilt, all removed after (.ci/cold.sh; ~45 min)
	bash .ci/cold.sh
