#!/bin/bash
# build-guest-initramfs.sh OUT KERNEL_DIR
#
# A busybox-static initramfs for the PV guests (domUs): /init is
# guest_agents/guest-init.sh, /bin/rtagent is guest_agents/rtagent.sh (the RT
# guest's ftrace stamp agent), /bin/tsccal from guest_agents/tsccal.c (the TSC
# calibration loop) and /bin/icsstorm from guest_agents/icsstorm.c (the interrupt
# storm) and /bin/framesend from guest_agents/framesend.c (the dump's frames), compiled freestanding, busybox applets as symlinks, and only the kernel
# modules the guests need (xen-pcifront, e1000e, e1000, xen-netfront and their
# dependencies; ptp/pps_core are built into Debian's kernel) from KERNEL_DIR
# (an output of fetch-kernel.sh), with depmod -b.
# Outputs: OUT/guest-initrd.cpio.gz (newc, gzip -9), OUT/versions.txt
set -euo pipefail
export RECIPE=build-guest-initramfs
# shellcheck source=images/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 2 ] || die "usage: $0 OUT KERNEL_DIR"
OUT=$(realpath -m "$1")
KDIR=$(realpath "$2") || die "KERNEL_DIR $2 does not exist"
[ -f "$KDIR/kver" ] || die "$KDIR/kver missing: KERNEL_DIR must be an output of fetch-kernel.sh"
KVER=$(cat "$KDIR/kver")
INIT_SRC=$REPO_DIR/guest_agents/guest-init.sh
[ -f "$INIT_SRC" ] || die "$INIT_SRC missing"
RTAGENT_SRC=$REPO_DIR/guest_agents/rtagent.sh
[ -f "$RTAGENT_SRC" ] || die "$RTAGENT_SRC missing"
TSCCAL_SRC=$REPO_DIR/guest_agents/tsccal.c
[ -f "$TSCCAL_SRC" ] || die "$TSCCAL_SRC missing"
ICSSTORM_SRC=$REPO_DIR/guest_agents/icsstorm.c
[ -f "$ICSSTORM_SRC" ] || die "$ICSSTORM_SRC missing"
FRAMESEND_SRC=$REPO_DIR/guest_agents/framesend.c
[ -f "$FRAMESEND_SRC" ] || die "$FRAMESEND_SRC missing"
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (apt-get install busybox-static)"
file -b "$BUSYBOX" | grep -q 'statically linked' || die "$BUSYBOX is not statically linked (install busybox-static)"
[ "$(id -u)" = 0 ] || die "must run as root (creates /dev/console in the archive)"
need cpio gzip depmod file python3 gcc
MODULES="xen-pcifront e1000e ptp pps_core e1000 xen-netfront"


T0=$(date +%s)
lib_stage_out "$OUT"
lib_workdir
R=$WORK/root
log "assembling the tree in $R (kernel $KVER)"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc,root,lib/modules}
chmod 1777 "$R/tmp"
cp "$BUSYBOX" "$R/bin/busybox"
n=0
for a in $("$BUSYBOX" --list-full); do
    [ "$a" != bin/busybox ] || continue
    mkdir -p "$R/$(dirname "$a")"
    [ -e "$R/$a" ] || { ln -s /bin/busybox "$R/$a"; n=$((n + 1)); }
done
log "busybox $("$BUSYBOX" | head -n1 | awk '{print $2}'): $n applet symlinks"
install -m 0755 "$INIT_SRC" "$R/init"
rm -f "$R/bin/rtagent"
install -m 0755 "$RTAGENT_SRC" "$R/bin/rtagent"
# Freestanding: no libc in the guest, and the loop's instructions are exactly what the source says.
gcc -static -nostdlib -O2 -fno-stack-protector -fno-pie -no-pie -o "$R/bin/tsccal" "$TSCCAL_SRC" \
    || die "cannot compile $TSCCAL_SRC"
gcc -static -nostdlib -O2 -fno-stack-protector -fno-pie -no-pie -o "$R/bin/icsstorm" "$ICSSTORM_SRC" \
    || die "cannot compile $ICSSTORM_SRC"
gcc -static -nostdlib -O2 -fno-stack-protector -fno-pie -no-pie -o "$R/bin/framesend" "$FRAMESEND_SRC" \
    || die "cannot compile $FRAMESEND_SRC"
mknod -m 600 "$R/dev/console" c 5 1
mknod -m 666 "$R/dev/null" c 1 3
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
echo "root:x:0:" >"$R/etc/group"

log "kernel modules with dependencies: $MODULES"
# shellcheck disable=SC2086
lib_copy_modules "$KDIR/modules" "$R" "$KVER" $MODULES
for m in xen-pcifront e1000e e1000 xen-netfront; do
    grep -q "/${m}.ko" "$R/lib/modules/$KVER/modules.dep" || die "module $m missing from the initramfs"
done

log "packing newc cpio + gzip -9"
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9 -n >"$STAGE/guest-initrd.cpio.gz"

{
    echo "# name version sha256-or-source"
    echo "busybox-static $(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown) $(sha256_of "$BUSYBOX")"
    echo "guest-init.sh - $(sha256_of "$INIT_SRC")"
    echo "rtagent.sh - $(sha256_of "$RTAGENT_SRC")"
    echo "tsccal.c gcc-$(gcc -dumpfullversion) $(sha256_of "$TSCCAL_SRC")"
    echo "icsstorm.c gcc-$(gcc -dumpfullversion) $(sha256_of "$ICSSTORM_SRC")"
    echo "framesend.c gcc-$(gcc -dumpfullversion) $(sha256_of "$FRAMESEND_SRC")"
    echo "freestanding.h $(sha256_of "$REPO_DIR/guest_agents/freestanding.h")"
    echo "kernel-release $KVER -"
    grep -E '^(linux-image|vmlinuz)' "$KDIR/versions.txt" | sed 's/^/kernel:/'
    (cd "$R/lib/modules/$KVER" && find . -name '*.ko*' | LC_ALL=C sort | while read -r f; do
        echo "module:$(basename "$f") $KVER $(sha256_of "$f")"
    done)
    echo "guest-initrd.cpio.gz - $(sha256_of "$STAGE/guest-initrd.cpio.gz")"
} >"$STAGE/versions.txt"

lib_commit_out "$STAGE" "$OUT"
log "done in $(( $(date +%s) - T0 )) s: $OUT/guest-initrd.cpio.gz ($(du -h "$OUT/guest-initrd.cpio.gz" | cut -f1))"
