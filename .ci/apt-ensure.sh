#!/usr/bin/env bash
# apt-ensure.sh TAG PKG...: install (as root, with apt-get) the Debian packages
# of PKG... that are not installed yet, saying so with TAG; nothing when all are.
# Shared by the one-node Slurm (.ci/setup.d/20-slurm.sh) and the 2-node virtual
# cluster (.ci/cluster/up.sh).
set -euo pipefail
tag=$1
shift
missing=()
for pkg in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "$tag: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
