#!/bin/bash
# Install Apptainer on a Debian bookworm machine that has none (`make apptainer-tool`).
#
# Apptainer is packaged only in Debian sid, built against sid's glibc (>= 2.38;
# bookworm has 2.36). So this downloads sid's `apptainer` and the libraries it
# needs as .debs (apt-get download through a private apt configuration with a
# sid source, without touching the system's apt), unpacks them under a private
# prefix, and points the two ELF programs (apptainer, starter) at sid's loader
# and libraries with patchelf (DT_RPATH, so their libraries' own dependencies
# resolve there too). Apptainer is relocatable (non-setuid): it finds its
# configuration and starter relative to itself. Finally a symlink
# ${APPTAINER_LINK:-/usr/local/bin/apptainer} -> a wrapper that adds this
# machine's defaults below (only where they are needed).
#
# Runs in ~10 s after the first time (the prefix is reused). Prints the path.
# Usage notes for this kind of machine (container, root without CAP_SYS_RESOURCE):
#   root:        apptainer exec --drop-caps CAP_SYS_RESOURCE IMAGE ...   (the wrapper sets APPTAINER_DROP_CAPS)
#   non-root:    apptainer exec --unsquash IMAGE ...   (the wrapper sets APPTAINER_UNSQUASH without squashfuse)
#   build a def: apptainer build --fakeroot (root needs an /etc/subuid,/etc/subgid entry; added here)
set -euo pipefail

CACHE=${PARSL_FLUX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parsl-flux}/apptainer-sid
LINK=${APPTAINER_LINK:-/usr/local/bin/apptainer}
SUITE=${APPTAINER_SUITE:-sid}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PKGS=(apptainer libc6 libc-gconv-modules-extra libgcc-s1 libseccomp2 libsqlite3-0)
say() { echo "apptainer-sid: $*"; }
die() { echo "apptainer-sid: ERROR: $*" >&2; exit 1; }

# shellcheck source=mk/stamp.sh
. "$(cd "$(dirname "$0")/.." && pwd)/mk/stamp.sh"
root=$CACHE/root
app=$root/usr/bin/apptainer
# Reused while it was unpacked by this script (its stamp, mk/stamp.sh) and still runs.
if decision=$(stamp_decide apptainer "$(stamp_have apptainer)") && [ "${FORCE:-0}" != 1 ] \
        && [ -x "$app" ] && "$app" --version >/dev/null 2>&1; then
    say "$decision"
else
    say "$decision$([ "${FORCE:-0}" = 1 ] && echo "; FORCE=1")"
    rm -f "$CACHE/stamp"
    for tool in patchelf dpkg-deb apt-get; do
        command -v "$tool" >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends patchelf >/dev/null; } || die "$tool missing"
    done
    # The runtime tools apptainer calls (mksquashfs/unsquashfs, newuidmap) come from bookworm.
    if [ "$(id -u)" = 0 ]; then
        missing=()
        for pkg in squashfs-tools uidmap fuse2fs; do
            [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
        done
        [ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    apt=$CACHE/apt
    mkdir -p "$apt/etc/apt/sources.list.d" "$apt/etc/apt/preferences.d" "$apt/etc/apt/apt.conf.d" \
        "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/status" "$CACHE/debs"
    touch "$apt/status/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" \
        > "$apt/etc/apt/sources.list"
    cat > "$apt/apt.conf" <<CONF
Dir::Etc "$apt/etc/apt";
Dir::State "$apt/state";
Dir::State::status "$apt/status/status";
Dir::Cache "$apt/cache";
APT::Architecture "amd64";
APT::Sandbox::User "root";
Acquire::Check-Valid-Until "false";
CONF
    say "fetching ${PKGS[*]} from Debian $SUITE"
    APT_CONFIG=$apt/apt.conf apt-get update -qq >/dev/null
    rm -f "$CACHE/debs/"*.deb
    (cd "$CACHE/debs" && APT_CONFIG=$apt/apt.conf apt-get download -qq "${PKGS[@]}" >/dev/null)
    rm -rf "$root"
    mkdir -p "$root"
    for deb in "$CACHE/debs/"*.deb; do dpkg-deb -x "$deb" "$root"; done
    lib=$root/usr/lib/x86_64-linux-gnu
    [ -e "$lib/ld-linux-x86-64.so.2" ] || die "no loader in sid's libc6 at $lib"
    for elf in "$app" "$lib/apptainer/bin/starter"; do
        patchelf --set-interpreter "$lib/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$lib" "$elf"
    done
    # Relocated layout: configuration at PREFIX/etc, session dirs beside libexec.
    ln -sfn ../etc "$root/usr/etc"
    mkdir -p "$root/usr/var/lib/apptainer/mnt/session" "$root/usr/lib/var/lib/apptainer/mnt/session"
    "$app" --version >/dev/null || die "the relocated apptainer does not run"
    stamp_of apptainer >"$CACHE/stamp"
fi

if [ "$(id -u)" = 0 ]; then
    # --fakeroot builds as root map root's ids through these ranges.
    for f in /etc/subuid /etc/subgid; do
        grep -q '^root:' "$f" 2>/dev/null || echo "root:1000000:65536" >> "$f"
    done
fi
# The command on PATH is a small wrapper, so that plain `apptainer run IMAGE ...`
# works here as the README writes it: root in this kind of sandbox lacks
# CAP_SYS_RESOURCE (bit 24 of the bounding set), which apptainer would ask for,
# and a user without setuid or squashfuse mounts needs the SIF unpacked.
wrapper=$CACHE/apptainer
cat > "$wrapper" <<WRAP
#!/bin/sh
# Written by containers/apptainer-sid.sh: sid's apptainer with this machine's defaults.
if [ "\$(id -u)" = 0 ]; then
    bnd=\$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
    if [ -n "\$bnd" ] && [ \$(( (0x\$bnd >> 24) & 1 )) = 0 ]; then
        export APPTAINER_DROP_CAPS=\${APPTAINER_DROP_CAPS:-CAP_SYS_RESOURCE}
    fi
elif ! command -v squashfuse >/dev/null 2>&1; then
    export APPTAINER_UNSQUASH=\${APPTAINER_UNSQUASH:-1}
fi
exec "$app" "\$@"
WRAP
chmod 0755 "$wrapper"
if [ ! -e "$LINK" ] || [ -L "$LINK" ]; then
    if mkdir -p "$(dirname "$LINK")" 2>/dev/null; then ln -sfn "$wrapper" "$LINK" 2>/dev/null || true; fi
fi
say "$("$app" --version) at $app$( [ "$(readlink -f "$LINK" 2>/dev/null)" = "$wrapper" ] && echo " (on PATH as $LINK)")"
