# shellcheck shell=bash
# Shared helpers of the image recipes (sourced, not executed).
#
#   RECIPE=name; source "$(dirname "$0")/lib.sh"
#
# Provides:
#   log / die                      progress and failure lines prefixed [RECIPE]
#   lib_derive_sources FILE [src]  write a one-line sources.list holding only the
#                                  host's Debian-archive entries for suite $SUITE,
#                                  component main (+ deb-src twins with "src")
#   lib_apt_init DIR [src]         private apt state under DIR (nothing in /etc
#                                  or /var/lib/apt is touched) + apt-get update
#   papt ARGS...                   apt-get with that private state
#   papt_cache ARGS...             apt-cache with that private state
#   lib_stage_out OUT              set STAGE: a temp dir next to OUT, removed on failure
#   lib_commit_out STAGE OUT       replace OUT by STAGE (rename)
#   lib_workdir                    set WORK: a scratch dir removed at exit (KEEP_WORK=1 keeps)
#   sha256_of FILE                 the sha256 of FILE
#   lib_copy_modules KDIR ROOT KVER MOD...
#                                  copy modules MOD (names or aliases, resolved by kmod's
#                                  modprobe --show-depends) from KDIR/lib/modules/KVER
#                                  into ROOT/lib/modules/KVER, then depmod -b ROOT

set -euo pipefail

: "${RECIPE:=images}"
IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034  # used by the recipes
REPO_DIR=$(cd "$IMAGES_DIR/.." && pwd)

log() { printf '[%s] %s\n' "$RECIPE" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$RECIPE" "$*" >&2; exit 1; }

_lib_on_err() { printf '[%s] FAILED (exit %s) at line %s: %s\n' "$RECIPE" "$1" "$2" "$3" >&2; }
trap '_lib_on_err $? $LINENO "$BASH_COMMAND"' ERR

# shellcheck source=images/pins.env
. "$IMAGES_DIR/pins.env"
: "${SUITE:?pins.env must set SUITE}"
# Where the host's apt sources are read from (tests may point it elsewhere).
LIB_APT_ETC=${LIB_APT_ETC:-/etc/apt}

need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found (install it first)"
    done
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- sources ---
# An entry is "Debian's own archive" when its URI path ends in /debian (not
# /debian-security, /debian-ports, ...), it is signed by the Debian archive
# keyring (or by apt's default trust store), and (checked after the update, in
# lib_apt_init) its Release file says Origin: Debian / Label: Debian.
_lib_keep_entry() { # type uri suite components signed-by
    local type=$1 uri=$2 suite=$3 comps=$4 signed=$5
    [ "$type" = deb ] || [ "$type" = deb-src ] || return 1
    [ "$suite" = "$SUITE" ] || return 1
    case " $comps " in *" main "*) ;; *) return 1 ;; esac
    case "${uri%/}" in */debian) ;; *) return 1 ;; esac
    case "$signed" in
        "" | /usr/share/keyrings/debian-archive-keyring.gpg | /usr/share/keyrings/debian-archive-keyring.pgp) ;;
        *) return 1 ;;
    esac
    return 0
}

# Print "uri<TAB>signed-by" for every kept entry (deb or deb-src), deduplicated.
_lib_host_entries() {
    local f
    {
        # one-line style: sources.list and sources.list.d/*.list
        for f in "$LIB_APT_ETC/sources.list" "$LIB_APT_ETC"/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            sed -e 's/#.*//' "$f" | while read -r line; do
                [ -n "$line" ] || continue
                local type opts="" uri suite comps signed=""
                # shellcheck disable=SC2086
                set -- $line
                type=$1; shift
                if [ "${1:-}" != "${1#[}" ]; then
                    # [ opt=val ... ] possibly spread over several words
                    while [ $# -gt 0 ]; do
                        opts="$opts ${1#[}"
                        case "$1" in *]) shift; break ;; esac
                        shift
                    done
                    opts=${opts%]}
                fi
                [ $# -ge 3 ] || continue
                uri=$1; suite=$2; shift 2; comps="$*"
                local o
                for o in $opts; do
                    case "$o" in signed-by=*) signed=${o#signed-by=} ;; esac
                done
                if _lib_keep_entry "$type" "$uri" "$suite" "$comps" "$signed"; then
                    printf '%s\t%s\n' "$uri" "$signed"
                fi
            done
        done
        # deb822 style: sources.list.d/*.sources, parsed by python-debian (python3-debian)
        for f in "$LIB_APT_ETC"/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            # Debian's python3 (python3-debian is installed for it), not whatever python3 is first on PATH
            /usr/bin/python3 - "$f" <<'EOF' || die "cannot parse $f with python3-debian (images/install-host-deps.sh installs it)"
import sys
from debian.deb822 import Deb822
with open(sys.argv[1], encoding="utf-8") as f:
    for para in Deb822.iter_paragraphs(f):
        if para.get("Enabled", "yes").lower() == "no":
            continue
        signed = para.get("Signed-By", "")
        if "\n" in signed or "BEGIN PGP" in signed:
            signed = "<inline>"
        for t in para.get("Types", "").split():
            for u in para.get("URIs", "").split():
                for s in para.get("Suites", "").split():
                    print("\t".join([t, u, s, " ".join(para.get("Components", "").split()), signed]))
EOF
        done | while IFS=$'\t' read -r type uri suite comps signed; do
            if _lib_keep_entry "$type" "$uri" "$suite" "$comps" "$signed"; then
                printf '%s\t%s\n' "$uri" "$signed"
            fi
        done
    } | awk '!seen[$0]++'
}

# lib_derive_sources FILE [src]
lib_derive_sources() {
    local out=$1 want_src=${2:-} uri signed opt n=0
    : >"$out"
    while IFS=$'\t' read -r uri signed; do
        opt=""
        [ -z "$signed" ] || opt="[signed-by=$signed] "
        printf 'deb %s%s %s main\n' "$opt" "$uri" "$SUITE" >>"$out"
        [ -z "$want_src" ] || printf 'deb-src %s%s %s main\n' "$opt" "$uri" "$SUITE" >>"$out"
        n=$((n + 1))
    done < <(_lib_host_entries)
    [ "$n" -gt 0 ] || die "no Debian-archive '$SUITE main' entry found in $LIB_APT_ETC/sources.list or $LIB_APT_ETC/sources.list.d/*.{list,sources}"
}

# ------------------------------------------------------------ private apt ---
APT_OPTS=()

lib_apt_init() {
    local dir=$1 want_src=${2:-}
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/parts" "$dir/prefs.d"
    lib_derive_sources "$dir/sources.list" "$want_src"
    : >"$dir/status"
    : >"$dir/preferences"
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$dir/sources.list"
        -o "Dir::Etc::SourceParts=$dir/parts"
        -o "Dir::Etc::Preferences=$dir/preferences"
        -o "Dir::Etc::PreferencesParts=$dir/prefs.d"
        -o "Dir::State::Lists=$dir/lists"
        -o "Dir::State::status=$dir/status"
        -o "Dir::Cache=$dir/cache"
        -o "Dir::Cache::pkgcache=$dir/cache/pkgcache.bin"
        -o "Dir::Cache::srcpkgcache=$dir/cache/srcpkgcache.bin"
        -o "APT::Sandbox::User=root"
        -o "Acquire::GzipIndexes=false"
        -o "APT::Get::List-Cleanup=false"
        -o "Debug::NoLocking=true"
    )
    log "private apt sources (derived from the host's configuration):"
    sed 's/^/    /' "$dir/sources.list" >&2
    log "apt-get update (private state in $dir)"
    papt -q update >"$dir/update.log" 2>&1 || { cat "$dir/update.log" >&2; die "apt-get update failed"; }
    grep -E '^(W|E):' "$dir/update.log" >&2 || true
    # Every kept entry must really be Debian's archive.
    local rel ok=0
    for rel in "$dir"/lists/*_dists_"${SUITE}"_InRelease "$dir"/lists/*_dists_"${SUITE}"_Release; do
        [ -f "$rel" ] || continue
        if ! grep -q '^Origin: Debian$' "$rel" || ! grep -q '^Label: Debian$' "$rel"; then
            die "$(basename "$rel") is not Debian's archive (Origin/Label are not 'Debian')"
        fi
        ok=1
    done
    [ "$ok" = 1 ] || die "no Release file for suite $SUITE was fetched"
}

papt() { apt-get "${APT_OPTS[@]}" "$@"; }
papt_cache() { apt-cache "${APT_OPTS[@]}" "$@"; }

# ------------------------------------------------------------ output dirs ---
# lib_stage_out OUT: set STAGE to a fresh dir next to OUT (same file system, so
# the final move is atomic); it is removed at exit unless committed.
lib_stage_out() {
    local out=$1 parent
    parent=$(dirname "$out")
    mkdir -p "$parent"
    STAGE=$(mktemp -d "$parent/.$(basename "$out").tmp.XXXXXX")
    chmod 755 "$STAGE"
    LIB_CLEANUP+=("$STAGE")
}

lib_commit_out() {
    local stage=$1 out=$2 old=""
    if [ -e "$out" ]; then
        old=$(mktemp -d "$(dirname "$out")/.$(basename "$out").old.XXXXXX")
        mv "$out" "$old/"
    fi
    mv "$stage" "$out"
    [ -z "$old" ] || rm -rf "$old"
}

# ---------------------------------------------------------------- modules ---
# lib_copy_modules KDIR ROOT KVER MOD...   (missing modules are reported and skipped;
# a module that is built into the kernel (modules.builtin) is reported as such)
lib_copy_modules() {
    local kdir=$1 root=$2 kver=$3; shift 3
    local src="$kdir/lib/modules/$kver" dst="$root/lib/modules/$kver"
    [ -f "$src/modules.dep" ] || die "$src/modules.dep missing (is KERNEL_DIR an output of fetch-kernel.sh?)"
    mkdir -p "$dst"
    # kmod resolves names, aliases and dependencies from the binary indexes depmod wrote.
    local m line
    : >"$root/.modlist"
    for m in "$@"; do
        if ! line=$(modprobe -d "$kdir" -S "$kver" --show-depends "$m" 2>&1); then
            log "  MISSING $m (neither a module nor built in; skipped): $line"
            continue
        fi
        case "$line" in
            builtin\ *) log "  builtin $m (in vmlinuz, nothing to copy)" ;;
            *) log "  module  $m" ;;
        esac
        printf '%s\n' "$line" | awk -v src="$src/" '$1 == "insmod" && index($2, src) == 1 { print substr($2, length(src) + 1) }' >>"$root/.modlist"
    done
    awk '!seen[$0]++' "$root/.modlist" >"$root/.modlist.u" && mv "$root/.modlist.u" "$root/.modlist"
    local p n=0
    while read -r p; do
        mkdir -p "$dst/$(dirname "$p")"
        cp -a "$src/$p" "$dst/$p"
        n=$((n + 1))
    done <"$root/.modlist"
    rm -f "$root/.modlist"
    local f
    for f in modules.order modules.builtin modules.builtin.modinfo; do
        [ -f "$src/$f" ] && cp -a "$src/$f" "$dst/"
    done
    depmod -b "$root" "$kver" || die "depmod -b $root $kver failed"
    log "copied $n module files (with dependencies) into $dst"
}

# ------------------------------------------------------- cleanup + inputs ---
LIB_CLEANUP=()
LIB_WORKDIRS=()
_lib_on_exit() {
    local d
    for d in "${LIB_CLEANUP[@]}"; do rm -rf "$d"; done
    for d in "${LIB_WORKDIRS[@]}"; do
        if [ "${KEEP_WORK:-0}" = 1 ]; then
            log "KEEP_WORK=1: keeping work dir $d"
        else
            rm -rf "$d"
        fi
    done
}
trap _lib_on_exit EXIT
lib_cleanup_add() { LIB_CLEANUP+=("$@"); }

# lib_workdir: set WORK to a scratch dir (removed at exit unless KEEP_WORK=1),
# under $WORK_TMPDIR or ${TMPDIR:-/tmp}
lib_workdir() {
    WORK=$(mktemp -d "${WORK_TMPDIR:-${TMPDIR:-/tmp}}/$RECIPE.XXXXXX")
    LIB_WORKDIRS+=("$WORK")
}
