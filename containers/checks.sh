#!/bin/bash
# Sourced by containers/image.sh and containers/release-test.sh: run every
# check, record each with its time, and fail only at the end, so one run
# reports all that is wrong.
#   check NAME CMD...   run CMD, record "ok"/"FAILED" with its time; returns CMD's status
#   summary             print the record; exit 1 if any check failed
results=()
failed=0
check() {
    local name=$1 start=$SECONDS rc
    shift
    echo "== $name: $*"
    "$@"
    rc=$?
    if [ "$rc" -eq 0 ]; then results+=("ok      $name ($((SECONDS - start))s)")
    else results+=("FAILED  $name (exit $rc, $((SECONDS - start))s)"); failed=$((failed + 1)); fi
    return "$rc"
}
summary() {
    echo "== summary"
    printf '  %s\n' "${results[@]}"
    [ "$failed" -eq 0 ] || { echo "${CHECKS_TAG:-checks}: $failed check(s) failed" >&2; exit 1; }
}
