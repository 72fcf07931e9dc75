#!/usr/bin/env bash
# CI set-up for the image checks (tests/test_images.py): shellcheck lints the
# container entrypoint and the scripts next to it. hadolint, spython and
# dockerfile-parse come from the `test` extra, so only shellcheck is needed
# here. Idempotent and quiet; `apt-get update` runs only when the package
# lists lack shellcheck. Without root it says so and changes nothing (then
# the test that lints shell scripts skips, naming the reason).
set -euo pipefail

command -v shellcheck >/dev/null 2>&1 && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "10-images: shellcheck missing and cannot be installed here (needs root and apt-get)" >&2
    exit 0
fi

# Run quietly, but show apt's output if a step fails.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        return 1
    fi
}

export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show shellcheck >/dev/null 2>&1; then
    quiet apt-get update -qq
fi
quiet apt-get install -y -qq --no-install-recommends shellcheck
