#!/bin/bash
# Build and check the parsl-flux image with podman or docker (whichever answers;
# see containers/engine.sh), and make the SIF from it. Used by mk/images.mk and
# .github/workflows/images.yml, so both run the same commands.
#
#   image.sh build    build $IMAGE from containers/Dockerfile (context: the checkout)
#   image.sh test     containers/test-in-image.sh in $IMAGE (suite, MPI, example),
#                     then the commands of docs/images.md: `IMAGE`, `IMAGE python
#                     examples/workflow.py`, the same as another uid in group 0
#                     (OpenShift); every step runs, the script fails at the end
#   image.sh sif      $SIF from $IMAGE: `save --format oci-archive`, then
#                     `apptainer build SIF oci-archive://...` (same bits as tested)
#   image.sh sif-test the Apptainer commands of docs/images.md with $SIF
#   image.sh size     the image's size
# IMAGE (parsl-flux:dev), SIF (parsl-flux.sif), CONTAINER_ENGINE (podman|docker).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=containers/engine.sh
. containers/engine.sh
# shellcheck source=mk/stamp.sh
. mk/stamp.sh

IMAGE=${IMAGE:-parsl-flux:dev}
SIF=${SIF:-parsl-flux.sif}
say() { echo "image: $*"; }

CHECKS_TAG=image
# shellcheck source=containers/checks.sh
. containers/checks.sh

size() {
    engine image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB\n", $1 / 1e6}'
}

cmd=${1:-}
case $cmd in
    build)
        # Always built: the engine's layer cache is keyed on content (the
        # base image's ID, each instruction, COPY's files), so an unchanged
        # checkout on an unchanged base reuses every layer; the label adds
        # the recipe's stamp (mk/stamp.sh) for `stamp.sh --plan`.
        pick_engine || exit 1
        start=$SECONDS
        before=$(engine image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
        echo "$(stamp_decide image "$(stamp_have image)" || true) (the engine's layer cache decides for the checkout's files)"
        ignore=()
        [ "$ENGINE" = podman ] && ignore=(--ignorefile containers/Dockerfile.dockerignore)
        engine_build "${ignore[@]}" --label "$STAMP_LABEL=$(stamp_of image)" \
            -f containers/Dockerfile -t "$IMAGE" . || exit 1
        after=$(engine image inspect --format '{{.Id}}' "$IMAGE")
        if [ "$before" = "$after" ]; then say "reused $IMAGE (every layer cached: same recipe, base and files)"
        else say "rebuilt $IMAGE with $ENGINE in $((SECONDS - start))s; size $(size)"; fi
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
        # Reused while it was made from this image (its ID) by this recipe
        # and Apptainer: $SIF.stamp holds "STAMP IMAGE-ID".
        pick_engine || exit 1
        command -v apptainer >/dev/null || { echo "image: no apptainer (bash containers/apptainer-sid.sh installs it)" >&2; exit 1; }
        start=$SECONDS
        image_id=$(engine image inspect --format '{{.Id}}' "$IMAGE") || exit 1
        have=$(cat "$SIF.stamp" 2>/dev/null || true)
        if [ -f "$SIF" ] && [ "$have" = "$(stamp_of sif) $image_id" ]; then
            echo "sif: reuse $SIF (stamp $(stamp_of sif) and image ${image_id:0:12} match)"
            exit 0
        fi
        if [ -f "$SIF" ] && [ "${have% *}" = "$(stamp_of sif)" ]; then echo "sif: rebuild ($IMAGE changed: ${have#* } -> $image_id)"
        else stamp_decide sif "$(stamp_have sif)" || true; fi
        rm -f "$SIF.stamp"
        archive=$(mktemp -d "${TMPDIR:-/tmp}/parsl-flux-oci.XXXXXX")
        trap 'rm -rf "$archive"' EXIT
        engine save --format oci-archive -o "$archive/image.tar" "$IMAGE" >/dev/null || exit 1
        apptainer build --force "$SIF" "oci-archive://$archive/image.tar" || exit 1
        echo "$(stamp_of sif) $image_id" >"$SIF.stamp"
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
