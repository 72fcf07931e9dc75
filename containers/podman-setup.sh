#!/bin/bash
# Make podman usable as root on this kind of machine (a container itself: no
# systemd, no cgroup delegation, rlimits capped), so that the README's plain
# `podman run --rm IMAGE ...` works as written (`make podman-setup`):
#   * installs podman, runc and catatonit (podman's --init) from Debian when missing;
#   * writes /etc/containers/containers.conf.d/parsl-flux.conf: cgroupfs cgroup
#     manager, the runc runtime, and ulimits within the sandbox's own.
# Idempotent; ~1 s when already done (~1 min the first time, for apt-get).
set -euo pipefail
CONF=/etc/containers/containers.conf.d/parsl-flux.conf
[ "$(id -u)" = 0 ] || { echo "podman-setup: needs root" >&2; exit 1; }
# catatonit: the init `podman run --init` starts (a Recommends of podman, so
# --no-install-recommends leaves it out); container blocks run with --init.
missing=()
for pkg in podman runc catatonit; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "podman-setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p "$(dirname "$CONF")"
new=$(mktemp)
cat > "$new" <<'CONFEOF'
# Written by containers/podman-setup.sh (parsl-flux): podman as root inside a sandbox.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONFEOF
if ! cmp -s "$new" "$CONF"; then install -m 0644 "$new" "$CONF"; echo "podman-setup: wrote $CONF"; fi
rm -f "$new"
podman info --format '{{.Host.CgroupManager}} {{.Host.OCIRuntime.Name}}' >/dev/null
echo "podman-setup: $(podman --version), $(podman info --format 'cgroups {{.Host.CgroupManager}}, runtime {{.Host.OCIRuntime.Name}}')"
