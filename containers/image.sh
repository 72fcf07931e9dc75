#!/bin/bash
# Build and check the parsl-flux image with podman or docker (whichever answers;
# see containers/engine.sh), and make the SIF from it. Used by mk/images.mk and
# .github/workflows/images.yml, so both run the same commands.
#
#   image.sh build    build $IMAGE from containers/Dockerfile (context: the checkout)
#   image.sh test     containers/test-in-image.sh in $IMAGE (suite, MPI, example),
#                     then the README's commands: `IMAGE`, `IMAGE python
#                     examples/workflow.py`, the same as another uid in group 0
#                     (OpenShift); every step runs, the script fails at the end
#   image.sh sif      $SIF from $IMAGE: `save --format oci-archive`, then
#                     `apptainer build SIF oci-archive://...` (same bits as tested)
#   image.sh sif-test the README's Apptainer commands with $SIF
#   image.sh size     the image's size
# IMAGE (parsl-flux:dev), SIF (parsl-flux.sif), CONTAINER_ENGINE (podman|docker).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=containers/engine.sh
. containers/engine.sh

IMAGE=${IMAGE:-parsl-flux:dev}
SIF=${SIF:-parsl-flux.sif}
say() { echo "image: $*"; }

results=()
failed=0
check() {  # check NAME CMD...: run, record, go on
    local name=$1 start=$SECONDS rc
    shift
    echo "== $name: $*"
    "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then results+=("ok      $name ($((SECONDS - start))s)")
    else results+=("FAILED  $name (exit $rc, $((SECONDS - start))s)"); failed=$((failed + 1)); fi
}
summary() {
    echo "== summary"
    printf '  %s\n' "${results[@]}"
    [ "$failed" -eq 0 ] || { echo "image: $failed check(s) failed" >&2; exit 1; }
}

size() {
    engine image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB\n", $1 / 1e6}'
}

cmd=${1:-}
case $cmd in
    build)
        pick_engine || exit 1
        start=$SECONDS
        ignore=()
        [ "$ENGINE" = podman ] && ignore=(--ignorefile containers/Dockerfile.dockerignore)
        engine_build "${ignore[@]}" -f containers/Dockerfile -t "$IMAGE" . || exit 1
        say "built $IMAGE with $ENGINE in $((SECONDS - start))s; size $(size)"
        base=$(engine image inspect --format '{{index .Config.Labels "org.parsl-flux.base-standin"}}' "$IMAGE")
        [ "$base" = true ] && say "NOTE: built on the local stand-in base image (label org.parsl-flux.base-standin=true)"
        ;;
    test)
        pick_engine || exit 1
        check "test-in-image.sh (suite, MPI, example)" \
            engine_run --rm --entrypoint /opt/parsl-flux/containers/test-in-image.sh "$IMAGE"
        check "IMAGE (what it holds)" engine_run --rm "$IMAGE"
        check "IMAGE python examples/workflow.py" engine_run --rm "$IMAGE" python examples/workflow.py
        check "IMAGE python /opt/parsl-flux/examples/workflow.py" \
            engine_run --rm "$IMAGE" python /opt/parsl-flux/examples/workflow.py
        check "as uid 12345, group 0 (OpenShift)" \
            engine_run --rm --user 12345:0 "$IMAGE" python examples/workflow.py
        summary
        ;;
    sif)
        pick_engine || exit 1
        command -v apptainer >/dev/null || { echo "image: no apptainer (bash containers/apptainer-sid.sh installs it)" >&2; exit 1; }
        start=$SECONDS
        archive=$(mktemp -d "${TMPDIR:-/tmp}/parsl-flux-oci.XXXXXX")
        trap 'rm -rf "$archive"' EXIT
        engine save --format oci-archive -o "$archive/image.tar" "$IMAGE" >/dev/null || exit 1
        apptainer build --force "$SIF" "oci-archive://$archive/image.tar" || exit 1
        say "built $SIF from $IMAGE in $((SECONDS - start))s; $(du -h "$SIF" | cut -f1)"
        ;;
    sif-test)
        check "apptainer run SIF" apptainer run "$SIF"
        check "apptainer run SIF python examples/workflow.py" apptainer run "$SIF" python examples/workflow.py
        check "apptainer exec SIF flux start flux getattr size" apptainer exec "$SIF" flux start flux getattr size
        summary
        ;;
    size)
        pick_engine || exit 1
        say "$IMAGE: $(size)"
        ;;
    *)
        echo "usage: $0 build|test|sif|sif-test|size" >&2
        exit 2
        ;;
esac
