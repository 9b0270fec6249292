#!/bin/bash
# fetch-kernel.sh OUT
#
# Downloads Debian's kernel package KERNEL_PACKAGE=KERNEL_VERSION (pins.env)
# from the host's bookworm main archive and unpacks it.
# Outputs: OUT/vmlinuz, OUT/kver (kernel release string, e.g. 6.1.0-50-amd64),
#          OUT/config (the kernel's .config), OUT/System.map,
#          OUT/modules/lib/modules/<kver>/... (full module tree + modules.* files),
#          OUT/versions.txt
set -euo pipefail
export RECIPE=fetch-kernel
# shellcheck source=images/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 OUT"
OUT=$(realpath -m "$1")
: "${KERNEL_PACKAGE:?pins.env must set KERNEL_PACKAGE}" "${KERNEL_VERSION:?pins.env must set KERNEL_VERSION}"
need apt-get dpkg-deb depmod sha256sum


T0=$(date +%s)
lib_stage_out "$OUT"
lib_workdir
lib_apt_init "$WORK/apt"

log "downloading $KERNEL_PACKAGE=$KERNEL_VERSION"
(cd "$WORK" && papt -q download "$KERNEL_PACKAGE=$KERNEL_VERSION") >"$WORK/download.log" 2>&1 \
    || { cat "$WORK/download.log" >&2; die "apt-get download $KERNEL_PACKAGE=$KERNEL_VERSION failed"; }
DEB=$(ls "$WORK"/"${KERNEL_PACKAGE}"_*.deb)
[ -f "$DEB" ] || die "no .deb downloaded"
GOT=$(dpkg-deb -f "$DEB" Version)
[ "$GOT" = "$KERNEL_VERSION" ] || die "downloaded version $GOT, wanted $KERNEL_VERSION"

log "unpacking $(basename "$DEB")"
dpkg-deb -x "$DEB" "$WORK/x"
VMLINUZ=$(ls "$WORK"/x/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -f "$VMLINUZ" ] || die "package has no /boot/vmlinuz-*"
KVER=${VMLINUZ##*/vmlinuz-}
[ -d "$WORK/x/lib/modules/$KVER" ] || die "package has no /lib/modules/$KVER"

cp "$VMLINUZ" "$STAGE/vmlinuz"
[ ! -f "$WORK/x/boot/config-$KVER" ] || cp "$WORK/x/boot/config-$KVER" "$STAGE/config"
[ ! -f "$WORK/x/boot/System.map-$KVER" ] || cp "$WORK/x/boot/System.map-$KVER" "$STAGE/System.map"
printf '%s\n' "$KVER" >"$STAGE/kver"
mkdir -p "$STAGE/modules/lib/modules"
mv "$WORK/x/lib/modules/$KVER" "$STAGE/modules/lib/modules/$KVER"
log "depmod -b (generates modules.dep, modules.alias, ...)"
depmod -b "$STAGE/modules" "$KVER" || die "depmod failed"
[ -s "$STAGE/modules/lib/modules/$KVER/modules.dep" ] || die "depmod produced no modules.dep"

{
    echo "# name version sha256-or-source"
    echo "$KERNEL_PACKAGE $KERNEL_VERSION debian:$SUITE/main"
    echo "$(basename "$DEB") $KERNEL_VERSION $(sha256_of "$DEB")"
    echo "kernel-release $KVER -"
    echo "vmlinuz $KVER $(sha256_of "$STAGE/vmlinuz")"
    [ ! -f "$STAGE/config" ] || echo "config $KVER $(sha256_of "$STAGE/config")"
    echo "modules.dep $KVER $(sha256_of "$STAGE/modules/lib/modules/$KVER/modules.dep")"
} >"$STAGE/versions.txt"

lib_commit_out "$STAGE" "$OUT"
log "done in $(( $(date +%s) - T0 )) s: kernel $KVER, vmlinuz $(du -h "$OUT/vmlinuz" | cut -f1), modules $(du -sh "$OUT/modules" | cut -f1)"
