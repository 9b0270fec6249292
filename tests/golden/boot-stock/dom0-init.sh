#!/bin/sh
# /init of the testbed's dom0 (PID 1; no systemd, no udev). Rendered from
# orchestrator/templates/dom0-init.sh.j2 and shipped in the overlay cpio that
# is concatenated after dom0-rootfs.cpio.*.
#
# Console lines: "testbed-dom0: <step>" for each step, then exactly
# "TESTBED-DOM0-READY", then an interactive shell on /dev/hvc0 (PS1 "dom0# "),
# respawned whenever it exits. PID 1 never exits.

BRIDGE=xenbr0
LOAD_NIC_MAC=52:54:00:12:34:02
QGA_PORT=org.qemu.guest_agent.0
SHARE_TAG=testbed
SHARE_MOUNT=/mnt/testbed

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

step() { echo "testbed-dom0: $*"; }
warn() { echo "testbed-dom0: WARNING: $*"; }

# wait_for SECONDS COMMAND... : poll COMMAND every 0.2 s until it succeeds
wait_for() {
    _n=$(($1 * 5)); shift
    while [ "$_n" -gt 0 ]; do
        "$@" && return 0
        sleep 0.2
        _n=$((_n - 1))
    done
    return 1
}

step "mounting file systems"
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
# /var/run and /var/lock are symlinks into /run on Debian: create their targets.
mkdir -p /run/lock /run/xen /run/xenstored /var/lock /var/run/xen \
         /var/log/xen/console /var/lib/xen
hostname dom0
ip link set lo up
# Keep kernel messages from cutting through the console lines (dmesg has them).
grep -q 'loglevel=' /proc/cmdline || echo 4 >/proc/sys/kernel/printk

# The e1000e belongs to the RT guest (xl pci-assignable-add): never bind it here,
# not even by an explicit modprobe.
mkdir -p /etc/modprobe.d
echo "install e1000e /bin/false" >/etc/modprobe.d/testbed-no-e1000e.conf

step "loading xen modules"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs xen-pciback xen-netback; do
    modprobe "$m" || warn "modprobe $m failed"
done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen || warn "mount xenfs on /proc/xen failed"
if ! grep -q control_d /proc/xen/capabilities 2>/dev/null; then
    warn "/proc/xen/capabilities lacks control_d: not running as Xen dom0"
fi

step "loading bridge and virtio console modules"
for m in bridge virtio_pci virtio_console; do
    modprobe "$m" || warn "modprobe $m failed"
done

# The host's run folder over virtio-9p: bulk data (traces, guest dumps) goes
# straight to the host instead of through the guest agent's base64 replies.
step "mounting the host share $SHARE_TAG on $SHARE_MOUNT"
for m in 9pnet_virtio 9p; do
    modprobe "$m" || warn "modprobe $m failed"
done
mkdir -p "$SHARE_MOUNT"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 "$SHARE_TAG" "$SHARE_MOUNT" \
    || warn "mount of the host share $SHARE_TAG failed"

# The xen tools live in /usr/lib/xen-<major>.<minor>/bin (Debian); the
# /usr/sbin wrappers pick the directory from /sys/hypervisor/version.
XENBIN=
for d in /usr/lib/xen-*/bin; do [ -x "$d/xl" ] && XENBIN=$d; done
[ -n "$XENBIN" ] || warn "no /usr/lib/xen-*/bin/xl found"

# Debian's init script prefers oxenstored, then the C xenstored.
XENSTORED=
for x in "$XENBIN/oxenstored" "$XENBIN/xenstored"; do
    if [ -x "$x" ]; then XENSTORED=$x; break; fi
done
step "starting $(basename "${XENSTORED:-xenstored}")"
if [ -n "$XENSTORED" ]; then
    XENSTORED_ROOTDIR=/run/xenstored "$XENSTORED" --pid-file /run/xenstore.pid \
        >/var/log/xen/xenstored.out 2>&1 || warn "$XENSTORED failed (see /var/log/xen/xenstored.out)"
    wait_for 30 xenstore-read -s / >/dev/null 2>&1 || warn "xenstored does not answer after 30 s"
else
    warn "no xenstored binary"
fi
if [ -x "$XENBIN/xen-init-dom0" ]; then
    step "xen-init-dom0"
    "$XENBIN/xen-init-dom0" >/var/log/xen/xen-init-dom0.log 2>&1 || warn "xen-init-dom0 failed"
fi

step "starting xenconsoled"
"$XENBIN/xenconsoled" --log=guest --log-dir=/var/log/xen/console --pid-file=/run/xenconsoled.pid \
    || warn "xenconsoled failed"

step "creating bridge $BRIDGE"
ip link add name "$BRIDGE" type bridge stp_state 0 forward_delay 0 || warn "ip link add $BRIDGE failed"
ip link set "$BRIDGE" up || warn "ip link set $BRIDGE up failed"

# find_iface_by_mac MAC -> prints the interface name
find_iface_by_mac() {
    _want=$(echo "$1" | tr 'A-F' 'a-f')
    for _a in /sys/class/net/*/address; do
        [ -e "$_a" ] || continue
        if [ "$(cat "$_a")" = "$_want" ]; then
            _i=${_a%/address}; echo "${_i##*/}"; return 0
        fi
    done
    return 1
}

if [ -n "$LOAD_NIC_MAC" ]; then
    step "loading e1000 for the load NIC $LOAD_NIC_MAC"
    modprobe e1000 || warn "modprobe e1000 failed"
    if wait_for 10 find_iface_by_mac "$LOAD_NIC_MAC" >/dev/null; then
        LOAD_IF=$(find_iface_by_mac "$LOAD_NIC_MAC")
        ip link set "$LOAD_IF" master "$BRIDGE" || warn "cannot enslave $LOAD_IF to $BRIDGE"
        ip link set "$LOAD_IF" up || warn "ip link set $LOAD_IF up failed"
        step "load NIC $LOAD_IF ($LOAD_NIC_MAC) enslaved to $BRIDGE"
    else
        warn "no interface with MAC $LOAD_NIC_MAC after 10 s"
    fi
else
    step "no load NIC shared through dom0"
fi

# find_qga_port -> /dev/vportNpM whose /sys/class/virtio-ports/*/name is QGA_PORT
find_qga_port() {
    for _p in /sys/class/virtio-ports/*; do
        [ -e "$_p/name" ] || continue
        if [ "$(cat "$_p/name")" = "$QGA_PORT" ]; then
            [ -c "/dev/${_p##*/}" ] || return 1
            echo "/dev/${_p##*/}"; return 0
        fi
    done
    return 1
}

step "starting qemu-ga on $QGA_PORT"
if wait_for 10 find_qga_port >/dev/null; then
    QGA_DEV=$(find_qga_port)
    if qemu-ga --method=virtio-serial --path="$QGA_DEV" --daemonize \
        --logfile=/var/log/qemu-ga.log --pidfile=/run/qemu-ga.pid; then
        step "qemu-ga running on $QGA_DEV"
    else
        warn "qemu-ga failed (see /var/log/qemu-ga.log)"
    fi
else
    warn "no virtio port named $QGA_PORT after 10 s"
fi

echo "TESTBED-DOM0-READY"

CONSOLE=/dev/hvc0
[ -c "$CONSOLE" ] || CONSOLE=/dev/console
PS1='dom0# '
HOME=/root
TERM=vt100
export PS1 HOME TERM
cd /
while :; do
    setsid sh -c "exec sh <$CONSOLE >$CONSOLE 2>&1"
    sleep 1
done
