#!/bin/bash
# build-xen.sh OUT
#
# Builds the Xen hypervisor (not the tools) from Debian's xen source package
# (version XEN_SRC_VERSION from pins.env, with Debian's patches applied), plus
# optional extra patches and Kconfig options:
#   XEN_PATCHES="/abs/a.patch /abs/b.patch"   applied in order with patch -p1
#   XEN_CONFIG_FRAGMENT=/abs/fragment.config  appended to the defconfig, then olddefconfig
# Outputs: OUT/xen (multiboot ELF32, what QEMU -kernel boots), OUT/xen-syms,
#          OUT/xen.config, OUT/versions.txt
#      JOBS (default 2).
set -euo pipefail
export RECIPE=build-xen
# shellcheck source=images/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 OUT"
OUT=$(realpath -m "$1")
: "${XEN_SRC_VERSION:?pins.env must set XEN_SRC_VERSION}"
JOBS=${JOBS:-2}
need apt-get dpkg-source patch make gcc python3 flex bison sha256sum

PATCHES=()
for p in ${XEN_PATCHES:-}; do
    case "$p" in /*) ;; *) die "XEN_PATCHES entries must be absolute paths: $p" ;; esac
    [ -f "$p" ] || die "patch not found: $p"
    PATCHES+=("$p")
done
FRAGMENT=${XEN_CONFIG_FRAGMENT:-}
if [ -n "$FRAGMENT" ]; then
    [ -f "$FRAGMENT" ] || die "XEN_CONFIG_FRAGMENT not found: $FRAGMENT"
    FRAGMENT=$(realpath "$FRAGMENT")
fi


T0=$(date +%s)
lib_stage_out "$OUT"
lib_workdir
log "work dir $WORK, output $OUT"

lib_apt_init "$WORK/apt" src
mkdir -p "$WORK/src"
log "downloading source package xen=$XEN_SRC_VERSION"
(cd "$WORK/src" && papt -q source --download-only "xen=$XEN_SRC_VERSION") >"$WORK/source.log" 2>&1 \
    || { cat "$WORK/source.log" >&2; die "apt-get source xen=$XEN_SRC_VERSION failed"; }
DSC=$(ls "$WORK"/src/xen_*.dsc)
[ -f "$DSC" ] || die "no .dsc downloaded"

log "extracting with dpkg-source -x (applies Debian's patch series)"
(cd "$WORK/src" && dpkg-source -x "$(basename "$DSC")" tree) >"$WORK/dpkg-source.log" 2>&1 \
    || { cat "$WORK/dpkg-source.log" >&2; die "dpkg-source -x failed"; }
TREE=$WORK/src/tree
[ -f "$TREE/xen/Makefile" ] || die "extracted tree has no xen/Makefile"

for p in "${PATCHES[@]}"; do
    log "applying $(basename "$p")"
    if ! patch -p1 -d "$TREE" --forward --batch <"$p" >"$WORK/patch.log" 2>&1; then
        cat "$WORK/patch.log" >&2
        die "patch $p does not apply cleanly to xen $XEN_SRC_VERSION (rejects: $(cd "$TREE" && find . -name '*.rej' | tr '\n' ' '))"
    fi
done

log "configuring: make -C xen defconfig${FRAGMENT:+ + $(basename "$FRAGMENT") + olddefconfig}"
make -C "$TREE/xen" defconfig >"$WORK/config.log" 2>&1 \
    || { cat "$WORK/config.log" >&2; die "make defconfig failed"; }
if [ -n "$FRAGMENT" ]; then
    cat "$FRAGMENT" >>"$TREE/xen/.config"
    make -C "$TREE/xen" olddefconfig >>"$WORK/config.log" 2>&1 \
        || { cat "$WORK/config.log" >&2; die "make olddefconfig failed"; }
    # Every CONFIG_ line of the fragment must survive olddefconfig.
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*) grep -qxF "$line" "$TREE/xen/.config" \
                || die "fragment line '$line' was not kept by olddefconfig (missing dependency?)" ;;
            "# CONFIG_"*" is not set") grep -qxF "$line" "$TREE/xen/.config" \
                || die "fragment line '$line' was not kept by olddefconfig" ;;
        esac
    done <"$FRAGMENT"
fi

log "building the hypervisor: make -C xen -j$JOBS (a few minutes)"
T1=$(date +%s)
if ! make -C "$TREE/xen" -j"$JOBS" >"$WORK/build.log" 2>&1; then
    tail -n 60 "$WORK/build.log" >&2
    die "hypervisor build failed (full log: $WORK/build.log with KEEP_WORK=1)"
fi
log "build took $(( $(date +%s) - T1 )) s"

for f in xen xen-syms .config; do
    [ -s "$TREE/xen/$f" ] || die "build produced no xen/$f"
done
cp "$TREE/xen/xen" "$STAGE/xen"
cp "$TREE/xen/xen-syms" "$STAGE/xen-syms"
cp "$TREE/xen/.config" "$STAGE/xen.config"
file -b "$STAGE/xen" 2>/dev/null | grep -q 'ELF 32-bit' \
    || log "warning: OUT/xen is not an ELF32 ($(file -b "$STAGE/xen" 2>/dev/null || echo '?')); QEMU multiboot needs one"

XEN_FULLVER=$(make -s -C "$TREE/xen" xenversion 2>/dev/null || echo unknown)
{
    echo "# name version sha256-or-source"
    echo "xen-source-package $XEN_SRC_VERSION debian:$SUITE/main"
    for f in "$WORK"/src/*; do
        [ -f "$f" ] || continue
        echo "$(basename "$f") $XEN_SRC_VERSION $(sha256_of "$f")"
    done
    for p in "${PATCHES[@]}"; do
        echo "patch:$(basename "$p") - $(sha256_of "$p")"
    done
    [ -z "$FRAGMENT" ] || echo "config-fragment:$(basename "$FRAGMENT") - $(sha256_of "$FRAGMENT")"
    echo "gcc $(dpkg-query -W -f='${Version}' gcc-12 2>/dev/null || gcc -dumpfullversion) host-toolchain"
    echo "binutils $(dpkg-query -W -f='${Version}' binutils 2>/dev/null || echo unknown) host-toolchain"
    echo "xen $XEN_FULLVER $(sha256_of "$STAGE/xen")"
    echo "xen-syms $XEN_FULLVER $(sha256_of "$STAGE/xen-syms")"
    echo "xen.config $XEN_FULLVER $(sha256_of "$STAGE/xen.config")"
} >"$STAGE/versions.txt"

lib_commit_out "$STAGE" "$OUT"
log "done in $(( $(date +%s) - T0 )) s: $OUT/xen ($(du -h "$OUT/xen" | cut -f1)), xen-syms, xen.config, versions.txt"
