#!/bin/sh
# /init of the testbed's PV guests (busybox sh, PID 1 of a busybox initramfs).
#
# Kernel command line (xl "extra="):
#   testbed.role=rt     pass-through guest: xen-pcifront + e1000e, reports PCI
#                       devices and their interrupt mode
#   testbed.role=load   load guest: xen-netfront, eth0 up
#   testbed.ip=A.B.C.D/NN   optional address for the role's interface
#   testbed.e1000e_intmode=N  rt: load e1000e with IntMode=N (0 legacy INTx,
#                       1 MSI, 2 MSI-X: the driver's default)
#   testbed.e1000e_itr=N      rt: load e1000e with InterruptThrottleRate=N
#                       (0 off: one interrupt per packet event; default 3,
#                       dynamic conservative)
#   loglevel=N          if given, the console log level is left alone;
#                       otherwise it is lowered to 4 so kernel messages do not
#                       cut through the TESTBED-* lines
# Console lines (the orchestrator matches them):
#   TESTBED-PCI <bdf> <vendor>:<device> driver=<name|none>
#   TESTBED-IRQMODE <bdf> msi|msix|intx
#   TESTBED-NET <ifname> <mac> up
#   TESTBED-BUSY-LOOP pid=<pid>   (testbed.busy_loop=1: the paper's idle avoidance)
#   TESTBED-GUEST-READY role=<role>
# then an interactive shell on /dev/hvc0 with PS1 "<role># ", respawned forever.
# PID 1 never exits.

PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH

mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /run 2>/dev/null
mount -t tmpfs tmpfs /tmp 2>/dev/null
# tracefs for /bin/rtagent (interrupt-entry stamps with ftrace)
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null

say() { echo "testbed-guest: $*"; }

ROLE=""
IPADDR=""
KLOGLEVEL=""
E1000E_INTMODE=""
E1000E_ITR=""
# shellcheck disable=SC2013  # words, not lines
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        testbed.role=*) ROLE=${arg#testbed.role=} ;;
        testbed.ip=*) IPADDR=${arg#testbed.ip=} ;;
        testbed.e1000e_intmode=*) E1000E_INTMODE=${arg#testbed.e1000e_intmode=} ;;
        testbed.e1000e_itr=*) E1000E_ITR=${arg#testbed.e1000e_itr=} ;;
        testbed.busy_loop=*) BUSY_LOOP=${arg#testbed.busy_loop=} ;;
        loglevel=*) KLOGLEVEL=${arg#loglevel=} ;;
    esac
done
[ -n "$KLOGLEVEL" ] || echo 4 >/proc/sys/kernel/printk
hostname "${ROLE:-guest}" 2>/dev/null
ip link set lo up 2>/dev/null

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

e1000e_bound() {
    for _b in /sys/bus/pci/drivers/e1000e/*:*; do [ -e "$_b" ] && return 0; done
    return 1
}

# irq_mode BDF -> msix | msi | intx
irq_mode() {
    _d=/sys/bus/pci/devices/$1
    if [ -d "$_d/msi_irqs" ] && [ -n "$(ls "$_d/msi_irqs" 2>/dev/null)" ]; then
        if grep -q msix "$_d"/msi_irqs/* 2>/dev/null; then echo msix; else echo msi; fi
        return
    fi
    # Fall back to /proc/interrupts: the device's interfaces' IRQ lines.
    for _n in "$_d"/net/*; do
        [ -e "$_n" ] || continue
        _l=$(grep -E " ${_n##*/}(-|$)" /proc/interrupts)
        case "$_l" in
            *msi-x* | *MSI-X* | *msix*) echo msix; return ;;
            *msi* | *MSI*) echo msi; return ;;
        esac
    done
    echo intx
}

bring_up() { # ifname
    ip link set "$1" up || return 1
    if [ -n "$IPADDR" ]; then ip addr add "$IPADDR" dev "$1" || say "warning: could not add $IPADDR to $1"; fi
    return 0
}

say "role=${ROLE:-<none>} kernel $(uname -r)"
case "$ROLE" in
rt)
    say "modprobe xen-pcifront"
    modprobe xen-pcifront || say "warning: modprobe xen-pcifront failed"
    E1000E_OPTS="${E1000E_INTMODE:+IntMode=$E1000E_INTMODE} ${E1000E_ITR:+InterruptThrottleRate=$E1000E_ITR}"
    say "modprobe e1000e $E1000E_OPTS"
    # shellcheck disable=SC2086  # one word per option
    modprobe e1000e $E1000E_OPTS || say "warning: modprobe e1000e failed"
    if wait_for 20 e1000e_bound; then
        say "e1000e bound"
    else
        say "warning: no PCI device bound to e1000e after 20 s"
    fi
    # Bring the passed-through interfaces up first: e1000e allocates its
    # MSI-X/MSI vectors in open(), so the IRQ mode is only known afterwards.
    for d in /sys/bus/pci/devices/*; do
        [ -e "$d" ] || continue
        for n in "$d"/net/*; do
            [ -e "$n" ] || continue
            bring_up "${n##*/}" && say "${n##*/} up"
        done
    done
    sleep 1
    for d in /sys/bus/pci/devices/*; do
        [ -e "$d" ] || continue
        bdf=${d##*/}
        ven=$(cat "$d/vendor"); dev=$(cat "$d/device")
        drv=none
        [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
        echo "TESTBED-PCI $bdf ${ven#0x}:${dev#0x} driver=$drv"
        echo "TESTBED-IRQMODE $bdf $(irq_mode "$bdf")"
    done
    ;;
load)
    say "modprobe xen-netfront"
    modprobe xen-netfront || say "warning: modprobe xen-netfront failed"
    if wait_for 20 test -e /sys/class/net/eth0; then
        if bring_up eth0; then
            echo "TESTBED-NET eth0 $(cat /sys/class/net/eth0/address) up"
        else
            say "warning: could not bring eth0 up"
        fi
    else
        say "warning: no eth0 after 20 s"
    fi
    ;;
*)
    say "warning: no testbed.role=rt|load on the kernel command line"
    ROLE=guest
    ;;
esac

# The paper's idle avoidance: a lowest-priority CPU-bound user program keeps the
# guest's vCPU (and so its pCPU) from ever idling, so Xen never runs its idle
# domain there. Only with testbed.busy_loop=1.
if [ "${BUSY_LOOP:-0}" = 1 ]; then
    nice -n 19 sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &
    echo "TESTBED-BUSY-LOOP pid=$!"
fi

echo "TESTBED-GUEST-READY role=$ROLE"

CONSOLE=/dev/hvc0
[ -c "$CONSOLE" ] || CONSOLE=/dev/console
PS1="$ROLE# "
export PS1 HOME=/ TERM=vt100
# `xl shutdown` makes the guest kernel run /sbin/poweroff; busybox's poweroff
# only signals PID 1 (USR2 poweroff, TERM reboot, USR1 halt), and PID 1 ignores
# every signal it does not trap. The shell runs in the background so that
# `wait` returns to take the trap at once.
trap 'say "poweroff requested"; sync; poweroff -f' USR2
trap 'say "reboot requested"; sync; reboot -f' TERM
trap 'say "halt requested"; sync; halt -f' USR1
while :; do
    setsid sh -c "exec sh <$CONSOLE >$CONSOLE 2>&1" &
    wait $!
    sleep 1
done
