#!/bin/bash
# build-dom0-rootfs.sh OUT KERNEL_DIR
#
# dom0's root file system as an initramfs archive (no /init: the orchestrator
# appends an overlay cpio with the rendered /init, the guest images and xl
# configs; Linux unpacks concatenated archives in order).
#   mmdebstrap --variant=minbase $SUITE from the host's Debian bookworm main
#   entry only, with xen-utils-4.17=$XEN_UTILS_VERSION (every xen binary
#   package is checked to come out at that version), qemu-guest-agent,
#   iproute2, pciutils, kmod, procps, ethtool, busybox; no docs/man/locales;
#   plus the dom0 kernel modules (and dependencies) from KERNEL_DIR (an output
#   of fetch-kernel.sh), depmod -b.
# Outputs: OUT/dom0-rootfs.cpio.<ext> (newc), OUT/dpkg-list.txt, OUT/versions.txt
#   DOM0_COMPRESS=none (default) -> dom0-rootfs.cpio      (fastest dom0 boot
#                                   under TCG, see images/README.md)
#   DOM0_COMPRESS=zstd           -> dom0-rootfs.cpio.zst  (zstd -10)
#   DOM0_COMPRESS=gzip           -> dom0-rootfs.cpio.gz   (gzip -1)
set -euo pipefail
export RECIPE=build-dom0-rootfs
# shellcheck source=images/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 2 ] || die "usage: $0 OUT KERNEL_DIR"
OUT=$(realpath -m "$1")
KDIR=$(realpath "$2") || die "KERNEL_DIR $2 does not exist"
[ -f "$KDIR/kver" ] || die "$KDIR/kver missing: KERNEL_DIR must be an output of fetch-kernel.sh"
KVER=$(cat "$KDIR/kver")
: "${XEN_UTILS_VERSION:?pins.env must set XEN_UTILS_VERSION}"
[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap root mode, device nodes)"
need mmdebstrap cpio depmod python3 dpkg-query
COMPRESS=${DOM0_COMPRESS:-none}
case "$COMPRESS" in
    zstd) need zstd; ART=dom0-rootfs.cpio.zst ;;
    gzip) need gzip; ART=dom0-rootfs.cpio.gz ;;
    none) ART=dom0-rootfs.cpio ;;
    *) die "DOM0_COMPRESS must be zstd, gzip or none (got '$COMPRESS')" ;;
esac

PACKAGES="xen-utils-4.17=$XEN_UTILS_VERSION qemu-guest-agent iproute2 pciutils kmod procps ethtool busybox"
MODULES="xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-pciback xen-netback
         bridge stp llc tun e1000 e1000e virtio_pci virtio_ring virtio virtio_console
         9p 9pnet_virtio"


T0=$(date +%s)
lib_stage_out "$OUT"
lib_workdir
R=$WORK/root
lib_derive_sources "$WORK/sources.list"
log "sources (derived from the host's configuration):"
sed 's/^/    /' "$WORK/sources.list" >&2

log "mmdebstrap --variant=minbase $SUITE (+ $PACKAGES)"
# shellcheck disable=SC2086
if ! mmdebstrap --variant=minbase --mode=root --format=directory \
    --include="$(echo $PACKAGES | tr ' ' ',')" \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='Acquire::Languages "none"' \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/linda/*' \
    --dpkgopt='path-exclude=/usr/share/bug/*' \
    "$SUITE" "$R" "$WORK/sources.list" >"$WORK/mmdebstrap.log" 2>&1; then
    tail -n 40 "$WORK/mmdebstrap.log" >&2
    die "mmdebstrap failed"
fi
log "mmdebstrap done after $(( $(date +%s) - T0 )) s"

log "checking that every xen package is at $XEN_UTILS_VERSION"
chroot "$R" dpkg-query -W -f='${Package} ${Version}\n' >"$STAGE/dpkg-list.txt"
bad=$(awk -v v="$XEN_UTILS_VERSION" '$1 ~ /^(xen|libxen|xenstore)/ && $2 != v' "$STAGE/dpkg-list.txt")
[ -z "$bad" ] || die "xen packages not at $XEN_UTILS_VERSION: $bad"
grep -q "^xen-utils-4.17 $XEN_UTILS_VERSION\$" "$STAGE/dpkg-list.txt" || die "xen-utils-4.17 $XEN_UTILS_VERSION not installed"
XENSTORED=$(ls "$R"/usr/lib/xen-4.17/bin/oxenstored "$R"/usr/lib/xen-4.17/bin/xenstored 2>/dev/null | head -n1)
[ -n "$XENSTORED" ] || die "no xenstored in xen-utils-4.17"

log "trimming (apt lists/caches, docs, python bytecode caches, udev hwdb: no udev runs)"
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/* "$R"/var/cache/debconf/*-old \
       "$R"/var/log/*.log "$R"/var/log/apt/* "$R"/usr/share/doc-base \
       "$R"/usr/share/man "$R"/usr/share/info \
       "$R"/usr/lib/udev/hwdb.bin "$R"/usr/lib/udev/hwdb.d "$R"/etc/udev/hwdb.bin
find "$R" -name __pycache__ -type d -prune -exec rm -rf {} +

log "dom0 kernel modules from $KDIR (kernel $KVER)"
# shellcheck disable=SC2086
lib_copy_modules "$KDIR/modules" "$R" "$KVER" $MODULES
for m in xen-pciback xen-netback xen-gntdev xen-evtchn xenfs xen-privcmd bridge e1000 e1000e virtio_console; do
    grep -Eq "/${m}\.ko(\.[a-z]+)?:" "$R/lib/modules/$KVER/modules.dep" || die "module $m missing from the dom0 rootfs"
done

log "base configuration (hostname, fstab-less, device nodes, xen dirs)"
echo dom0 >"$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdom0\n' >"$R/etc/hosts"
rm -f "$R/init"
mkdir -p "$R/dev" "$R/proc" "$R/sys" "$R/run" "$R/tmp" "$R/var/log/xen/console" \
         "$R/var/run/xen" "$R/var/lib/xen" "$R/var/lock" "$R/boot/guest" "$R/etc/xen/testbed"
[ -c "$R/dev/console" ] || mknod -m 600 "$R/dev/console" c 5 1
[ -c "$R/dev/null" ] || mknod -m 666 "$R/dev/null" c 1 3
chmod 1777 "$R/tmp"

SIZE=$(du -sm "$R" | cut -f1)
log "tree: ${SIZE} MB; packing newc cpio ($COMPRESS)"
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc) >"$WORK/rootfs.cpio"
case "$COMPRESS" in
    zstd) zstd -q -T2 -10 -o "$STAGE/$ART" "$WORK/rootfs.cpio" ;;
    gzip) gzip -1 -n -c "$WORK/rootfs.cpio" >"$STAGE/$ART" ;;
    none) mv "$WORK/rootfs.cpio" "$STAGE/$ART" ;;
esac

{
    echo "# name version sha256-or-source"
    echo "suite $SUITE debian:$SUITE/main"
    echo "mmdebstrap $(dpkg-query -W -f='${Version}' mmdebstrap 2>/dev/null || echo unknown) host-tool"
    grep -E '^(linux-image|vmlinuz)' "$KDIR/versions.txt" | sed 's/^/kernel:/'
    echo "kernel-release $KVER -"
    sed 's/$/ debian:'"$SUITE"'\/main/' "$STAGE/dpkg-list.txt"
    echo "xenstored $(basename "$XENSTORED") -"
    echo "$ART - $(sha256_of "$STAGE/$ART")"
} >"$STAGE/versions.txt"

lib_commit_out "$STAGE" "$OUT"
log "done in $(( $(date +%s) - T0 )) s: $OUT/$ART ($(du -h "$OUT/$ART" | cut -f1), tree ${SIZE} MB)"
