#!/bin/bash
# Build the release image: containers/Dockerfile with its release labels
# (source, revision, and the Flux, Fluxion, OpenMPI and Parsl versions it
# holds). Used by .github/workflows/release.yml and containers/release-test.sh,
# so the published image and the rehearsed one are made the same way.
#
#   release.sh image   build $IMAGE (containers/image.sh build), run it once
#                      for the versions inside, and build again with the
#                      labels as build arguments: every layer but the labels
#                      comes from the first build's cache
#   release.sh labels  print $IMAGE's labels
# IMAGE, PYTHON (a Python with parsl-flux; default .venv/bin/python),
# SOURCE_URL (default: the Dockerfile's), REVISION (default: git HEAD).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=containers/engine.sh
. containers/engine.sh

IMAGE=${IMAGE:-parsl-flux:dev}
PYTHON=${PYTHON:-.venv/bin/python}
say() { echo "release: $*"; }

case ${1:-} in
    image)
        pick_engine
        start=$SECONDS
        IMAGE=$IMAGE bash containers/image.sh build
        tmp=$(mktemp -d "${TMPDIR:-/tmp}/parsl-flux-release.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        engine_run --rm --entrypoint python3 "$IMAGE" -m parsl_flux.tools.images info >"$tmp/info.json"
        revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
        source_args=()
        [ -n "${SOURCE_URL:-}" ] && source_args=(--source "$SOURCE_URL")
        [ ${#source_args[@]} -eq 0 ] && source_args=(--source "$(sed -n 's/^ARG SOURCE_URL=//p' containers/Dockerfile)")
        args=$("$PYTHON" -m parsl_flux.tools.release build-args "$tmp/info.json" --dockerfile containers/Dockerfile \
            "${source_args[@]}" --revision "$revision")
        say "labels from the image's versions: $(echo "$args" | sed -n 's/^--label //p' | tr '\n' ' ')"
        # one --build-arg NAME=VALUE or --label KEY=VALUE per line, values without spaces:
        # joined for image.sh's word splitting
        CONTAINER_BUILD_OPTS="${CONTAINER_BUILD_OPTS:-} ${args//$'\n'/ }" IMAGE=$IMAGE bash containers/image.sh build
        say "$IMAGE labelled in $((SECONDS - start))s"
        ;;
    labels)
        pick_engine
        # shellcheck disable=SC2016  # a Go template, not shell
        engine image inspect --format '{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}' "$IMAGE"
        ;;
    *)
        echo "usage: $0 image|labels" >&2
        exit 2
        ;;
esac
