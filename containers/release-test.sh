#!/bin/bash
# `make release-test`: rehearse a release and a site user's first pull, on
# this machine only (a registry on 127.0.0.1, nothing reaches the network).
#
#  1. wheel and sdist (python -m build), named with parsl_flux.__version__
#  2. the release image (containers/release.sh image: labels from the versions
#     inside) and its SIF (containers/image.sh sif)
#  3. a registry (Debian's docker-registry) on 127.0.0.1:<free port>, its
#     storage in a temporary directory
#  4. push: the image as VERSION and latest (podman push), the SIF as an OCI
#     artifact (python -m parsl_flux.tools.release push-sif, ORAS)
#  5. pull as a user would: `podman pull`, `apptainer pull docker://`, and
#     `parsl-flux image pull oras://...` (the site cache's own pull)
#  6. the example workflow from each pulled copy
#  7. stop the registry, remove every image, file and directory it made
# and print sizes and times. Every step runs; the script fails at the end if one failed.
#
# RELEASE_IMAGE (default parsl-flux:release-test; removed at the end),
# RELEASE_BUILD=0 uses RELEASE_IMAGE as it is (no build, not removed),
# PYTHON (.venv/bin/python, with the `release` extra).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=containers/engine.sh
. containers/engine.sh
pick_engine || exit 1
[ "$ENGINE" = podman ] || { echo "release-test: needs podman (push/pull with --tls-verify=false)" >&2; exit 1; }

PYTHON=${PYTHON:-.venv/bin/python}
IMAGE=${RELEASE_IMAGE:-parsl-flux:release-test}
BUILD=${RELEASE_BUILD:-1}
VERSION=$("$PYTHON" -m parsl_flux.tools.release version) || exit 1
for tool in docker-registry apptainer; do
    command -v "$tool" >/dev/null || { echo "release-test: $tool missing (apt-get install docker-registry; make apptainer-tool)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/parsl-flux-release-test.XXXXXX")
registry_pid=
pulled=()
cleanup() {
    [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
    for ref in "${pulled[@]}"; do engine rmi -f "$ref" >/dev/null 2>&1; done
    [ "$BUILD" = 1 ] && engine rmi -f "$IMAGE" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT

CHECKS_TAG=release-test
# shellcheck source=containers/checks.sh
. containers/checks.sh
mb() { du -m "$1" | cut -f1; }

# 1. wheel and sdist
check "wheel and sdist" "$PYTHON" -m build --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 || tail -20 "$tmp/build.log"
check "dist files carry the version" test -f "$tmp/dist/parsl_flux-$VERSION-py3-none-any.whl" -a \
    -f "$tmp/dist/parsl_flux-$VERSION.tar.gz"

# 2. release image and SIF
if [ "$BUILD" = 1 ]; then
    check "release image (labels)" env IMAGE="$IMAGE" PYTHON="$PYTHON" bash containers/release.sh image
fi
# labels_named: the 7 release labels are there, none "unknown", the version this one.
labels_named() {
    IMAGE=$IMAGE bash containers/release.sh labels >"$tmp/labels" || return 1
    local named
    named=$(grep -cE "^org\.(opencontainers\.image\.(version=$VERSION\$|source=|revision=)|parsl-flux\.(flux-core|fluxion|openmpi|parsl)\.version=)" \
        "$tmp/labels")
    [ "$named" = 7 ] && ! grep -q '=unknown$' "$tmp/labels"
}
check "labels name the versions" labels_named
sed 's/^/   /' "$tmp/labels" 2>/dev/null
check "SIF from the image" env IMAGE="$IMAGE" SIF="$tmp/parsl-flux.sif" bash containers/image.sh sif

# 3. registry on 127.0.0.1
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry=127.0.0.1:$port
cat >"$tmp/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $tmp/registry
http:
  addr: $registry
EOF
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do curl -fs "http://$registry/v2/" >/dev/null && break; sleep 0.2; done
check "registry on $registry" curl -fs "http://$registry/v2/" || { cat "$tmp/registry.log"; exit 1; }

# 4. push
for tag in "$VERSION" latest; do
    check "podman push :$tag" engine push --quiet --tls-verify=false "$IMAGE" "docker://$registry/parsl-flux:$tag"
done
check "push SIF (ORAS)" "$PYTHON" -m parsl_flux.tools.release push-sif "$tmp/parsl-flux.sif" \
    "oras://$registry/parsl-flux-sif:$VERSION"

# 5. pull as a user would (APPTAINER_CACHEDIR: no apptainer cache shared with other runs)
export APPTAINER_CACHEDIR=$tmp/apptainer-cache PARSL_FLUX_IMAGE_CACHE=$tmp/image-cache
pulled+=("$registry/parsl-flux:$VERSION")
check "podman pull" engine pull --quiet --tls-verify=false "$registry/parsl-flux:$VERSION"
check "apptainer pull docker://" apptainer pull --no-https "$tmp/from-docker.sif" "docker://$registry/parsl-flux:$VERSION"
check "parsl-flux image pull oras://" "$PYTHON" -m parsl_flux.cli image pull "oras://$registry/parsl-flux-sif:$VERSION"
oras_sif=$(find "$PARSL_FLUX_IMAGE_CACHE" -maxdepth 1 -name '*.sif' | head -1)
check "pulled SIF is the pushed SIF" cmp -s "$oras_sif" "$tmp/parsl-flux.sif"
check "second pull reuses the cache" bash -c "'$PYTHON' -m parsl_flux.cli image pull 'oras://$registry/parsl-flux-sif:$VERSION' 2>&1 | grep -q reusing"

# 6. the example from each pulled copy (start-up: `IMAGE true` in a new Flux instance)
check "start-up, podman copy" engine_run --rm "$registry/parsl-flux:$VERSION" true
check "start-up, apptainer docker:// copy" apptainer run "$tmp/from-docker.sif" true
check "example, podman copy" engine_run --rm "$registry/parsl-flux:$VERSION" python examples/workflow.py
check "example, apptainer docker:// copy" apptainer run "$tmp/from-docker.sif" python examples/workflow.py
check "example, oras:// copy" apptainer run "$oras_sif" python examples/workflow.py

echo "== sizes"
echo "   image $IMAGE: $(engine image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
echo "   SIF (from the image): $(mb "$tmp/parsl-flux.sif") MB; pulled docker:// SIF: $(mb "$tmp/from-docker.sif" 2>/dev/null) MB"
echo "   registry storage after pushes: $(mb "$tmp/registry") MB"
echo "   wheel $(du -k "$tmp/dist/parsl_flux-$VERSION-py3-none-any.whl" | cut -f1) KB, sdist $(du -k "$tmp/dist/parsl_flux-$VERSION.tar.gz" | cut -f1) KB"
summary
