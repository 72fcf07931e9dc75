#!/usr/bin/env bash
# Build flux-core (and, with WITH_FLUXION=1, Fluxion) into a prefix this project
# owns, and reuse that prefix when it already holds the right version.
#
# Why a script of our own: Flux is in no package registry these machines reach,
# so `make flux`, `make run` and CI build it from source. One progress line per
# stage, with its time; the full output of each stage goes to a log file that
# the error message names.
#
# Prefix:  FLUX_PREFIX, else ${PARSL_FLUX_CACHE:-${XDG_CACHE_HOME:-~/.cache}/parsl-flux}/flux-core-VERSION
#          (the same default parsl_flux.fluxpath looks in, so everything finds it).
# Source:  FLUX_CORE_TARBALL, else ../shared/vendor/flux-core-VERSION.tar.gz beside
#          the checkout, else the upstream release tarball (needs internet).
# Packages: installed with apt-get when run as root; otherwise the exact command
#          is printed and the script stops (exit 2).
# Options: --with-mpi   also install Debian's OpenMPI (what MPI apps and the example use)
#          --mpi-only   only that (Flux is already there)
set -euo pipefail

WITH_MPI=0
MPI_ONLY=0
for arg in "$@"; do
    case $arg in
        --with-mpi) WITH_MPI=1;;
        --mpi-only) WITH_MPI=1; MPI_ONLY=1;;
        *) echo "build-flux: unknown option '$arg' (known: --with-mpi, --mpi-only)" >&2; exit 2;;
    esac
done

VERSION=${FLUX_CORE_VERSION:-0.88.0}
SCHED_VERSION=${FLUX_SCHED_VERSION:-0.54.0}
WITH_FLUXION=${WITH_FLUXION:-0}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${PARSL_FLUX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parsl-flux}
PREFIX=${FLUX_PREFIX:-$CACHE/flux-core-$VERSION}
VENDOR=${PARSL_FLUX_VENDOR:-$HERE/../shared/vendor}
LOGDIR=$CACHE/logs
JOBS=${JOBS:-$(nproc)}

CORE_PKGS=(autoconf automake libtool make pkg-config gcc libc6-dev libzmq3-dev uuid-dev
    libjansson-dev liblz4-dev libarchive-dev libhwloc-dev libsqlite3-dev libncurses-dev
    lua5.1 liblua5.1-0-dev lua-posix python3-dev python3-cffi python3-ply python3-yaml
    python3-setuptools curl ca-certificates)
MPI_PKGS=(openmpi-bin libopenmpi-dev)
SCHED_PKGS=(cmake g++ libboost-dev libboost-graph-dev libedit-dev libyaml-cpp-dev python3-yaml)

say() { echo "build-flux: $*"; }
die() { echo "build-flux: ERROR: $*" >&2; exit 1; }

# stage NAME LOG CMD...: run CMD with its output in LOG, print one line with the time.
stage() {
    local name=$1 log=$2 start=$SECONDS
    shift 2
    printf 'build-flux: %-10s ... ' "$name"
    if ! "$@" >>"$log" 2>&1; then
        echo "failed after $((SECONDS - start))s"
        echo "build-flux: ERROR: stage '$name' failed; full log: $log (last lines below)" >&2
        tail -n 25 "$log" >&2
        exit 1
    fi
    echo "done in $((SECONDS - start))s"
}

installed_version() { "$PREFIX/bin/flux" version 2>/dev/null | awk '/^commands:/ {print $2}'; }
# A prefix is reused only while it carries the stamp of this recipe and these
# sources (mk/stamp.sh), and its flux still answers with the right version.
# shellcheck source=mk/stamp.sh
. "$HERE/mk/stamp.sh"
STAMP_PREFIX=$PREFIX

need_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "build-flux: these Debian packages are missing: ${missing[*]}" >&2
        echo "build-flux: install them, then run this again:" >&2
        echo "    sudo apt-get install -y ${missing[*]}" >&2
        exit 2
    fi
    command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get here"
    local log=$LOGDIR/packages.log
    export DEBIAN_FRONTEND=noninteractive
    say "installing Debian packages: ${missing[*]}"
    stage packages "$log" bash -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${missing[*]}"
}

# fetch_source NAME VERSION ENVVAR URL: path of the source tarball.
source_tarball() {
    local name=$1 version=$2 given=$3 url=$4
    if [ -n "$given" ]; then
        [ -f "$given" ] || die "tarball '$given' (from the environment) does not exist"
        echo "$given"; return
    fi
    if [ -f "$VENDOR/$name-$version.tar.gz" ]; then
        echo "$VENDOR/$name-$version.tar.gz"; return
    fi
    local dest=$CACHE/src/$name-$version.tar.gz
    if [ ! -f "$dest" ]; then
        mkdir -p "$CACHE/src"
        curl -fsSL --retry 2 -o "$dest.part" "$url" \
            || die "no $name source: set the tarball variable, put it in $VENDOR, or allow downloads from $url"
        mv "$dest.part" "$dest"
    fi
    echo "$dest"
}

# unpack_source NAME VERSION TITLE GIVEN_TARBALL: find the tarball, start a
# fresh log, unpack into a new directory; sets SRC and LOG for the caller.
unpack_source() {
    local tarball
    tarball=$(source_tarball "$1" "$2" "$4" \
        "https://github.com/flux-framework/$1/releases/download/v$2/$1-$2.tar.gz")
    LOG=$LOGDIR/$1-$2.log
    : >"$LOG"
    say "$3 $2 from $tarball into $PREFIX (log: $LOG)"
    SRC=$(mktemp -d "${TMPDIR:-/tmp}/$1-build.XXXXXX")
    stage unpack "$LOG" tar -xzf "$tarball" -C "$SRC" --strip-components=1
}

build_core() {
    local src log
    unpack_source flux-core "$VERSION" flux-core "${FLUX_CORE_TARBALL:-}"
    src=$SRC log=$LOG
    if [ ! -x "$src/configure" ]; then   # a git archive has no configure
        stage autogen "$log" bash -c "cd '$src' && FLUX_VERSION=$VERSION ./autogen.sh"
    fi
    stage configure "$log" bash -c "cd '$src' && PYTHON=/usr/bin/python3 ./configure --prefix='$PREFIX' --disable-docs"
    stage build "$log" make -C "$src" -j"$JOBS"
    stage install "$log" make -C "$src" install
    rm -rf "$src"
}

build_fluxion() {
    local src log
    unpack_source flux-sched "$SCHED_VERSION" Fluxion "${FLUX_SCHED_TARBALL:-}"
    src=$SRC log=$LOG
    stage configure "$log" bash -c "cd '$src' && PATH='$PREFIX/bin':\$PATH FLUX_SCHED_VERSION=$SCHED_VERSION \
        cmake -B build -DCMAKE_INSTALL_PREFIX='$PREFIX' -DCMAKE_BUILD_TYPE=Release"
    stage build "$log" cmake --build "$src/build" -j"$JOBS"
    stage install "$log" cmake --build "$src/build" -t install
    stamp_of fluxion >"$PREFIX/.fluxion-stamp"
    rm -rf "$src"
}

mkdir -p "$LOGDIR"
if [ "$WITH_MPI" = 1 ]; then
    need_packages "${MPI_PKGS[@]}"
    [ "$MPI_ONLY" = 1 ] && { say "OpenMPI ready: $(command -v mpicc)"; exit 0; }
fi
if decision=$(stamp_decide flux-core "$(stamp_have flux-core)") && [ "$(installed_version)" = "$VERSION" ]; then
    say "$decision: flux-core $VERSION in $PREFIX"
else
    say "$decision"
    [ -e "$PREFIX" ] && { say "removing the prefix $PREFIX (another recipe, version, or an incomplete build)"; rm -rf "$PREFIX"; }
    need_packages "${CORE_PKGS[@]}"
    build_core
    [ "$(installed_version)" = "$VERSION" ] || die "$PREFIX/bin/flux does not report version $VERSION after install"
    stamp_of flux-core >"$PREFIX/.parsl-flux-stamp"
fi
if [ "$WITH_FLUXION" = 1 ]; then
    if decision=$(stamp_decide fluxion "$(stamp_have fluxion)"); then
        say "$decision: Fluxion $SCHED_VERSION in $PREFIX"
    else
        say "$decision"
        need_packages "${SCHED_PKGS[@]}"
        build_fluxion
    fi
fi
say "ready: $PREFIX/bin/flux ($("$PREFIX/bin/flux" version | awk '/^commands:/ {print $2}'))"
