#!/bin/bash
# Recipe stamps: every cached artifact of this project (the Flux prefix,
# Fluxion in it, Apptainer, the debootstrap root filesystem, the base-image
# stand-in, the image and the SIF) is reused only while the inputs that made
# it are unchanged. Sourced by the scripts that build them; `bash mk/stamp.sh
# NAME` prints one artifact's stamp, `bash mk/stamp.sh --inputs NAME` its
# inputs (tests/test_stamps.py checks them).
#
# Why: a cache reused by name alone once hid a broken recipe (the stand-in's
# CA mount) on every machine that still had an older build. A stamp is a
# sha256 over the artifact's declared inputs (its line in stamp_inputs), the
# contents of its recipe, of every script that recipe sources, and of the
# vendored tarballs; an artifact built from other inputs carries another stamp
# and is rebuilt. This file, which every recipe sources for these functions,
# counts through each artifact's own declaration, so editing one artifact's
# inputs rebuilds that artifact (and what is built on it), not all of them.
#
# The inputs of each artifact are declared once, in stamp_inputs below.
# Upstream artifacts are chained by their own stamp (the stand-in's stamp
# includes the root filesystem's), so a change rebuilds everything downstream
# of it and nothing upstream.

_stamp_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAMP_VENDOR=${PARSL_FLUX_VENDOR:-$_stamp_root/../shared/vendor}
STAMP_CORE_VERSION=${FLUX_CORE_VERSION:-0.88.0}
STAMP_SCHED_VERSION=${FLUX_SCHED_VERSION:-0.54.0}

# stamp_inputs NAME: one input per line, "file:PATH" (relative to the checkout
# unless absolute) or "stamp:OTHER" (another artifact's stamp).
stamp_inputs() {
    case $1 in
        flux-core)
            printf '%s\n' file:mk/build-flux.sh \
                "file:$STAMP_VENDOR/flux-core-$STAMP_CORE_VERSION.tar.gz" ;;
        fluxion)
            printf '%s\n' stamp:flux-core "file:$STAMP_VENDOR/flux-sched-$STAMP_SCHED_VERSION.tar.gz" ;;
        apptainer)
            printf '%s\n' file:containers/apptainer-sid.sh ;;
        rootfs)
            printf '%s\n' file:containers/base-standin/build.sh file:containers/engine.sh ;;
        standin)
            printf '%s\n' stamp:rootfs file:containers/base-standin/Containerfile \
                "file:$STAMP_VENDOR/flux-core-$STAMP_CORE_VERSION.tar.gz" \
                "file:$STAMP_VENDOR/flux-sched-$STAMP_SCHED_VERSION.tar.gz" ;;
        image)
            # The build context itself is hashed by the engine's layer cache
            # (COPY is keyed on content); the recipe and the base are ours.
            printf '%s\n' file:containers/Dockerfile file:containers/Dockerfile.dockerignore \
                file:containers/image.sh file:containers/engine.sh file:containers/checks.sh ;;
        sif)
            printf '%s\n' file:containers/image.sh file:containers/engine.sh file:containers/checks.sh \
                stamp:apptainer ;;
        *)
            echo "stamp: unknown artifact '$1' (known: flux-core fluxion apptainer rootfs standin image sif)" >&2
            return 2 ;;
    esac
}

# stamp_of NAME: 16 hex digits over NAME's inputs (contents, not names or dates).
stamp_of() {
    local lines input path label
    lines=$(stamp_inputs "$1") || return
    {
        echo "artifact $1"
        while IFS= read -r input; do
            case $input in
                file:*)
                    path=${input#file:}
                    [[ $path == /* ]] || path=$_stamp_root/$path
                    # Named relative to the checkout, or by base name (the
                    # vendored tarballs): the stamp must not depend on where
                    # the checkout lies.
                    label=${input#file:}
                    [[ $label == /* ]] && label=$(basename "$label")
                    if [ -r "$path" ]; then
                        echo "$label $(sha256sum "$path" | cut -c1-64)"
                    else
                        echo "$label missing"
                    fi ;;
                stamp:*) echo "$input $(stamp_of "${input#stamp:}")" ;;
            esac
        done <<<"$lines"
    } | sha256sum | cut -c1-16
}

# stamp_decide NAME HAVE: prints why, returns 0 to reuse (HAVE == the stamp),
# 1 to rebuild. HAVE is the stamp the cached artifact carries ("" if none).
stamp_decide() {
    local want
    want=$(stamp_of "$1")
    if [ -z "$2" ]; then
        echo "$1: rebuild (no stamped build here; want $want)"
        return 1
    elif [ "$2" != "$want" ]; then
        echo "$1: rebuild (its inputs changed: stamp $2, want $want)"
        return 1
    fi
    echo "$1: reuse (stamp $want matches its inputs)"
}

# Where each artifact lives, and the stamp it carries (a file beside it, or an
# image label); the build scripts write them there, stamp_have reads them.
STAMP_CACHE=${PARSL_FLUX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parsl-flux}
STAMP_PREFIX=${FLUX_PREFIX:-$STAMP_CACHE/flux-core-$STAMP_CORE_VERSION}
STAMP_LABEL=org.parsl-flux.recipe-stamp
ROOTFS_IMAGE=localhost/parsl-flux-debootstrap:bookworm
BASE_IMAGE=${BASE_IMAGE:-fluxrm/flux-sched:bookworm-v0.54.0}

# stamp_label IMAGE: the recipe stamp label of a local image ("" if none or no image).
stamp_label() {
    local engine=${CONTAINER_ENGINE:-podman}
    command -v "$engine" >/dev/null 2>&1 || engine=docker
    command -v "$engine" >/dev/null 2>&1 || return 0
    "$engine" image inspect --format "{{index .Config.Labels \"$STAMP_LABEL\"}}" "$1" 2>/dev/null \
        | sed 's/^<no value>$//' || true
}

# stamp_have NAME: the stamp the cached artifact NAME carries ("" if none).
stamp_have() {
    case $1 in
        flux-core) cat "$STAMP_PREFIX/.parsl-flux-stamp" 2>/dev/null || true ;;
        fluxion) cat "$STAMP_PREFIX/.fluxion-stamp" 2>/dev/null || true ;;
        apptainer) cat "$STAMP_CACHE/apptainer-sid/stamp" 2>/dev/null || true ;;
        rootfs) stamp_label "$ROOTFS_IMAGE" ;;
        standin) stamp_label "$BASE_IMAGE" ;;
        image) stamp_label "${IMAGE:-parsl-flux:dev}" ;;
        sif) cut -d' ' -f1 "${SIF:-parsl-flux.sif}.stamp" 2>/dev/null || true ;;
        *) stamp_inputs "$1" >/dev/null ;;
    esac
}

# stamp_plan: for every artifact, whether the next build would reuse or rebuild it, and why.
stamp_plan() {
    local name
    for name in flux-core fluxion apptainer rootfs standin image sif; do
        stamp_decide "$name" "$(stamp_have "$name")" || true
    done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case ${1:-} in
        --inputs) stamp_inputs "${2:?usage: stamp.sh --inputs NAME}" ;;
        --plan) stamp_plan ;;
        ''|-*) echo "usage: stamp.sh NAME | --inputs NAME | --plan" >&2; exit 2 ;;
        *) stamp_of "$1" ;;
    esac
fi
