#!/usr/bin/env bash
# `make ci-cold`: .ci/run as on a new machine. A clone of this checkout's HEAD
# (with ../shared beside it) runs .ci/run with an empty project cache
# (PARSL_FLUX_CACHE), empty container storage (CONTAINERS_STORAGE_CONF: a
# graphroot and runroot of its own), Apptainer unpacked anew and linked from a
# bin directory of its own, and no FLUX_PATH. Every artifact is then built by
# the project's own scripts; afterwards everything it made is removed.
# Services (munge, the one-node Slurm, the 2-node virtual cluster, whose nodes
# run whatever SIF a test hands them) and Debian packages already installed
# stay as they are: they are not caches of this project's builds.
# Normal CI (.ci/run alone) stays warm. ~45 min on 2 cores.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
shared=$(cd "$src/../shared" 2>/dev/null && pwd) || { echo "ci-cold: no ../shared beside $src" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "ci-cold: needs root, as .ci/run does" >&2; exit 1; }
tmp=$(mktemp -d "${CI_COLD_DIR:-/var/tmp}/parsl-flux-cold.XXXXXX")
started=$SECONDS
say() { echo "ci-cold: $*"; }

cleanup() {
    local rc=$?
    say "removing $tmp (container storage, project cache, clone)"
    if command -v podman >/dev/null 2>&1; then
        podman rm -af >/dev/null 2>&1 || true
        podman rmi -af >/dev/null 2>&1 || true
    fi
    # Whatever the storage driver left mounted under it, deepest first. Nothing
    # mounted is the usual case: grep then fails, which pipefail + set -e turned
    # into an exit before the rm below (every earlier cold run left ~3 GB here).
    { findmnt -rn -o TARGET | grep "^$tmp/" || true; } | sort -r | while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done
    rm -rf "$tmp"
    say "done in $((SECONDS - started))s, .ci/run exit $rc"
    exit "$rc"
}
trap cleanup EXIT

git clone -q "$src" "$tmp/p"
ln -s "$shared" "$tmp/shared"
mkdir -p "$tmp/bin" "$tmp/storage" "$tmp/runroot" "$tmp/cache"
cat >"$tmp/storage.conf" <<CONF
# Written by .ci/cold.sh: container storage of its own, removed afterwards.
[storage]
driver = "${CI_COLD_STORAGE_DRIVER:-overlay}"
graphroot = "$tmp/storage"
runroot = "$tmp/runroot"
CONF
export CONTAINERS_STORAGE_CONF=$tmp/storage.conf
export PARSL_FLUX_CACHE=$tmp/cache
export APPTAINER_LINK=$tmp/bin/apptainer APPTAINER_CACHEDIR=$tmp/apptainer-cache
export PATH=$tmp/bin:$PATH
unset FLUX_PATH
say "clone of $(git -C "$src" rev-parse --short HEAD) in $tmp/p; cache $PARSL_FLUX_CACHE; storage $tmp/storage"
cd "$tmp/p"
bash mk/stamp.sh --plan | sed 's/^/ci-cold: before: /'
bash .ci/run
