#!/bin/bash
# Build the local STAND-IN for the base image fluxrm/flux-sched:bookworm-v0.54.0
# (`make base-standin`), for machines where no registry is reachable:
#   1. debootstrap Debian bookworm (minbase) into a cache directory;
#   2. import it as localhost/parsl-flux-debootstrap:bookworm
#      (tar -C rootfs -c . | podman import - NAME:TAG);
#   3. build containers/base-standin/Containerfile on it, with the vendored
#      flux-core and flux-sched sources as the context, tagged with the exact
#      name containers/Dockerfile names in FROM.
# Reuses what is here only while it was built from these inputs: the root
# filesystem and the stand-in carry the label org.parsl-flux.recipe-stamp, a
# hash over this script, the Containerfile, containers/engine.sh and the
# vendored tarballs (mk/stamp.sh); another stamp rebuilds (FORCE=1 always
# does). A real image of that name (no stand-in label) is left alone. The
# image carries the label org.parsl-flux.base-standin=true, so it is never
# mistaken for the real one.
# Needs root (debootstrap), debootstrap, podman or docker, and ../shared/vendor.
# Times on 2 cores: debootstrap ~2-4 min, Flux + Fluxion build ~10 min.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=containers/engine.sh
. "$root/containers/engine.sh"
# shellcheck source=mk/stamp.sh
. "$root/mk/stamp.sh"

BASE=$BASE_IMAGE
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VENDOR=${PARSL_FLUX_VENDOR:-$root/../shared/vendor}
CACHE=${PARSL_FLUX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parsl-flux}/base-standin
say() { echo "base-standin: $*"; }
die() { echo "base-standin: ERROR: $*" >&2; exit 1; }

pick_engine
if [ "${FORCE:-0}" != 1 ] && engine_has_image "$BASE" \
        && [ "$(engine image inspect --format '{{index .Config.Labels "org.parsl-flux.base-standin"}}' "$BASE" 2>/dev/null)" != true ]; then
    say "standin: reuse ($BASE is the real image, pulled; FORCE=1 builds the stand-in over it)"
    exit 0
fi
if [ "${FORCE:-0}" = 1 ]; then
    say "rootfs, standin: rebuild (FORCE=1)"
    rootfs_ok=0
else
    # The root filesystem matters only when the stand-in must be built.
    decision=$(stamp_decide standin "$(stamp_have standin)") && { say "$decision"; exit 0; }
    say "$decision"
    decision=$(stamp_decide rootfs "$(stamp_have rootfs)") && rootfs_ok=1 || rootfs_ok=0
    say "$decision"
fi
for f in flux-core-0.88.0.tar.gz flux-sched-0.54.0.tar.gz; do
    [ -r "$VENDOR/$f" ] || die "$VENDOR/$f is missing (set PARSL_FLUX_VENDOR to the folder holding it)"
done

start=$SECONDS
if [ "$rootfs_ok" != 1 ]; then
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    mkdir -p "$CACHE"
    rootfs=$CACHE/rootfs
    rm -rf "$rootfs"
    say "debootstrap bookworm (minbase) from $MIRROR (log: $CACHE/debootstrap.log)"
    if ! debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        die "debootstrap failed"
    fi
    # What a container needs that debootstrap leaves as on a host.
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
        "$MIRROR" "$MIRROR" > "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    say "importing the root filesystem as $ROOTFS_IMAGE"
    tar -C "$rootfs" -c . | engine import --change 'CMD ["/bin/bash"]' \
        --change "LABEL $STAMP_LABEL=$(stamp_of rootfs)" - "$ROOTFS_IMAGE" >/dev/null 2>&1
    rm -rf "$rootfs"
    say "debootstrap + import took $((SECONDS - start))s"
fi

step=$SECONDS
say "building $BASE from $here/Containerfile (Flux + Fluxion from $VENDOR; log: $CACHE/build.log)"
mkdir -p "$CACHE"
if ! engine_build --build-arg ROOTFS="$ROOTFS_IMAGE" --label "$STAMP_LABEL=$(stamp_of standin)" \
        -f "$here/Containerfile" -t "$BASE" "$VENDOR" \
        >"$CACHE/build.log" 2>&1; then
    tail -n 30 "$CACHE/build.log" >&2
    die "building $BASE failed"
fi
say "built $BASE in $((SECONDS - step))s (total $((SECONDS - start))s)"
engine_run --rm "$BASE" flux version | sed 's/^/base-standin:   /'
engine_run --rm "$BASE" flux start flux module list | grep -q sched-fluxion-qmanager \
    || die "flux start in $BASE does not load Fluxion (sched-fluxion-qmanager)"
say "flux start in $BASE runs Fluxion (sched-fluxion-qmanager)"
