#!/bin/bash
# Sourced by the image scripts (containers/*.sh, mk/images.mk through them):
# picks the container engine and the options it needs on this kind of machine.
#
#   ENGINE   podman or docker: $CONTAINER_ENGINE, else podman if it answers,
#            else docker if its daemon answers
#   engine ARGS...        the engine with its global options
#   engine_build ARGS...  `build` with the options that work without a registry
#   engine_run ARGS...    `run` with the options that work in a nested sandbox
#
# Podman here runs as root in a container of its own (no systemd, no cgroup v2
# delegation, no setrlimit beyond the sandbox's): cgroupfs, chroot isolation
# for builds, runc, and explicit ulimits. --pull=never: the FROM image must be
# local (the real one pulled, or the stand-in from `make base-standin`).
# Docker is used as is. CONTAINER_BUILD_OPTS / CONTAINER_RUN_OPTS add options.
#
# A machine whose HTTPS goes through a proxy with its own CA (local CAs in
# /usr/local/share/ca-certificates, or HOST_CA_BUNDLE=FILE) lends that bundle
# to podman's RUN steps and test runs, read-only, at a path no package owns
# (/run/parsl-flux-host-ca/ca.crt), named by the variables pip, requests,
# OpenSSL/Python, curl and git read: as --build-arg for builds (the recipes
# declare them as ARGs without a default, so they are unset elsewhere) and as
# -e for runs. The image itself never keeps it, and no package's own file
# (ca-certificates replaces /etc/ssl/certs/ca-certificates.crt) is shadowed.

pick_engine() {
    if [ -n "${CONTAINER_ENGINE:-}" ]; then
        ENGINE=$CONTAINER_ENGINE
    elif command -v podman >/dev/null 2>&1 && podman --cgroup-manager cgroupfs info >/dev/null 2>&1; then
        ENGINE=podman
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        ENGINE=docker
    else
        echo "engine: neither podman nor a Docker daemon answers (install podman: apt-get install podman runc)" >&2
        return 1
    fi
    export ENGINE
}

engine() {
    if [ "$ENGINE" = podman ]; then
        podman --cgroup-manager cgroupfs "$@"
    else
        docker "$@"
    fi
}

HOST_CA_DIR_IN=/run/parsl-flux-host-ca
HOST_CA_VARS=(SSL_CERT_FILE PIP_CERT REQUESTS_CA_BUNDLE CURL_CA_BUNDLE GIT_SSL_CAINFO)

# host_ca_bundle: the bundle to lend, or nothing when this machine needs none.
host_ca_bundle() {
    local bundle=${HOST_CA_BUNDLE:-}
    if [ -z "$bundle" ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        bundle=/etc/ssl/certs/ca-certificates.crt
    fi
    [ -n "$bundle" ] && [ -r "$bundle" ] && echo "$bundle"
    return 0
}

# ca_options build|run: sets CA_OPTS to the options that lend the host's CA
# bundle (empty when not needed): a read-only directory mount, and the
# variables naming the file in it (--build-arg or -e).
CA_OPTS=()
ca_options() {
    CA_OPTS=()
    local bundle dir var flag
    bundle=$(host_ca_bundle)
    [ -n "$bundle" ] || return 0
    dir=${PARSL_FLUX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parsl-flux}/host-ca
    mkdir -p "$dir"
    cp "$bundle" "$dir/ca.crt"
    chmod 0644 "$dir/ca.crt"
    chmod 0755 "$dir"
    CA_OPTS=(-v "$dir:$HOST_CA_DIR_IN:ro")
    [ "$1" = build ] && flag=--build-arg || flag=-e
    for var in "${HOST_CA_VARS[@]}"; do
        CA_OPTS+=("$flag" "$var=$HOST_CA_DIR_IN/ca.crt")
    done
}

engine_build() {
    # shellcheck disable=SC2086  # word splitting of the extra options is intended
    if [ "$ENGINE" = podman ]; then
        ca_options build
        engine build --isolation chroot --pull=never "${CA_OPTS[@]}" ${CONTAINER_BUILD_OPTS:-} "$@"
    else
        engine build ${CONTAINER_BUILD_OPTS:-} "$@"
    fi
}

engine_run() {
    # shellcheck disable=SC2086
    if [ "$ENGINE" = podman ]; then
        ca_options run
        engine run --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 "${CA_OPTS[@]}" \
            ${CONTAINER_RUN_OPTS:-} "$@"
    else
        engine run ${CONTAINER_RUN_OPTS:-} "$@"
    fi
}

# engine_has_image NAME: whether NAME is a local image.
engine_has_image() {
    engine image inspect "$1" >/dev/null 2>&1
}
