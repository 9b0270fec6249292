#!/bin/bash
# build-vcpu-plugin.sh OUT
#
# Builds the TCG plugin images/plugin/vcpucount.c (each vCPU's own instruction
# count at chosen TSC reads; see the file) against qemu-plugin.h from Debian's
# qemu source package of the version of the host's qemu-system-x86, so the
# plugin API is the one the installed QEMU loads.
# Outputs: OUT/vcpucount.so, OUT/versions.txt
set -euo pipefail
export RECIPE=build-vcpu-plugin
# shellcheck source=images/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 OUT"
OUT=$(realpath -m "$1")
need apt-get dpkg-query tar xz gcc sha256sum
SRC_C="$IMAGES_DIR/plugin/vcpucount.c"
[ -f "$SRC_C" ] || die "plugin source missing: $SRC_C"
QEMU_VERSION=$(dpkg-query -W -f='${source:Version}' qemu-system-x86 2>/dev/null) \
    || die "qemu-system-x86 is not installed (images/install-host-deps.sh installs it)"

T0=$(date +%s)
lib_stage_out "$OUT"
lib_workdir
lib_apt_init "$WORK/apt" src
mkdir -p "$WORK/src"
log "downloading source package qemu=$QEMU_VERSION (for qemu-plugin.h)"
(cd "$WORK/src" && papt -q source --download-only "qemu=$QEMU_VERSION") >"$WORK/source.log" 2>&1 \
    || { cat "$WORK/source.log" >&2; die "apt-get source qemu=$QEMU_VERSION failed: Debian's $SUITE main has no source of the installed QEMU"; }
ORIG=$(ls "$WORK"/src/qemu_*.orig.tar.xz)
[ -f "$ORIG" ] || die "no qemu orig tarball downloaded"
DEBIAN=$(ls "$WORK"/src/qemu_*.debian.tar.xz)
# Debian's patch series must leave the plugin header alone, or the orig header is not the built one.
if tar -xJOf "$DEBIAN" --wildcards 'debian/patches/*' 2>/dev/null | grep -q '^+++ .*qemu-plugin\.h'; then
    die "a Debian patch of qemu $QEMU_VERSION changes qemu-plugin.h: build from the patched tree instead"
fi
tar -xJf "$ORIG" -C "$WORK/src" --wildcards '*/include/qemu/qemu-plugin.h'
HEADER=$(ls "$WORK"/src/*/include/qemu/qemu-plugin.h)
API=$(sed -n 's/^#define QEMU_PLUGIN_VERSION \([0-9]*\)/\1/p' "$HEADER")
log "qemu-plugin.h of qemu $QEMU_VERSION: plugin API version $API"

log "compiling vcpucount.so"
gcc -O2 -Wall -Werror -shared -fPIC -pthread -I "$(dirname "$HEADER")" -o "$STAGE/vcpucount.so" "$SRC_C" \
    || die "gcc failed on $SRC_C"

{
    echo "# name version sha256-or-source"
    echo "qemu-source-package $QEMU_VERSION debian:$SUITE/main"
    echo "qemu-plugin.h api-$API $(sha256_of "$HEADER")"
    echo "vcpucount.c - $(sha256_of "$SRC_C")"
    echo "vcpucount.so - $(sha256_of "$STAGE/vcpucount.so")"
} >"$STAGE/versions.txt"
lib_commit_out "$STAGE" "$OUT"
log "done in $(( $(date +%s) - T0 )) s: $OUT"
